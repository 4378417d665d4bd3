"""The mount and PID namespace a local sandbox runs in (bubblewrap), and the uid switch inside it.

The sandbox sees the machine's files as before (its uid decides what it may read), but a ``/dev``
of its own that holds only the basic nodes and the device nodes of the GPUs it was given (plus the
driver's control nodes), its own ``/proc`` in its own PID namespace (no other sandbox's processes
or command lines), its own System V IPC, and private, size-capped ``/tmp``, ``/var/tmp``,
``/run/lock`` and ``/dev/shm`` (tmpfs: what is written there counts against the sandbox's memory
limit, and is gone when it stops; no learner finds another's files there). A learner who points
``CUDA_VISIBLE_DEVICES`` at another GPU finds no device node to open. The software the sandbox
runs stays visible where a private folder would hide it (``keep``: a checkout in ``/var/tmp``).

Process tree on the host: ``bwrap`` (the spawner's pid) -> ``bwrap`` (pid 1 of the namespace, a
reaper) -> the single-user server (after ``setpriv`` drops to the learner's uid). bwrap forwards
no signals, so :func:`server_pid` finds the server to signal, and killing the namespace's pid 1
ends everything inside it.
"""

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

# the NVIDIA driver's nodes that every GPU process needs, whichever GPU it uses
CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset", "nvidia-caps")
# the machine's folders anyone may write in: each sandbox gets memory-backed ones of its own instead
PRIVATE = ("/tmp", "/var/tmp", "/run/lock", "/dev/shm")
LOCK_BYTES = 4 * 2**20


def gpu_node_names(minors):
    """The names in ``/dev`` of the nodes a process given the GPUs ``minors`` needs (none without GPUs)."""
    names = [f"nvidia{int(m)}" for m in minors]
    return names + list(CONTROL_NODES) if names else []


def bwrap_path():
    return shutil.which("bwrap")


def setpriv_path():
    return shutil.which("setpriv")


@dataclass(frozen=True)
class Confinement:
    """What one sandbox's namespace holds."""

    uid: int | None  # None: the command stays root in the namespace (a warm sandbox drops to its learner later)
    gid: int | None
    groups: tuple = ()
    cwd: str = "/"
    gpu_minors: tuple = ()  # /dev/nvidia<minor> of the sandbox's GPUs
    device_dir: str = "/dev"  # where the host's device nodes are (tests point this at fake nodes)
    tmp_bytes: int | None = None  # size of the private /tmp, /var/tmp and /dev/shm (tmpfs: counts as memory)
    keep: tuple = ()  # host folders the sandbox needs that a private /tmp would hide (a state dir in /tmp)

    def gpu_nodes(self):
        """``[(host path, path in the sandbox)]`` of the device nodes to expose, those that exist."""
        names = gpu_node_names(self.gpu_minors)
        root = Path(self.device_dir)
        return [(str(root / n), f"/dev/{n}") for n in names if (root / n).exists()]

    def missing_gpu_nodes(self):
        root = Path(self.device_dir)
        return [f"{root}/nvidia{m}" for m in self.gpu_minors if not (root / f"nvidia{m}").exists()]

    def argv(self, command, bwrap=None, setpriv=None):
        """The command line that runs ``command`` (a list) confined, as the learner."""
        bwrap = bwrap or bwrap_path()
        setpriv = setpriv or setpriv_path()
        size = [] if self.tmp_bytes is None else ["--size", str(self.tmp_bytes)]
        args = [
            bwrap,
            "--dev-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--unshare-pid",
            "--unshare-ipc",
            "--new-session",
        ]
        for folder in PRIVATE:  # /run/lock is for lock files: a small one
            if folder == "/dev/shm" or (os.path.isdir(folder) and not os.path.islink(folder)):
                cap = ["--size", str(LOCK_BYTES)] if folder == "/run/lock" else size
                args += ["--perms", "1777", *cap, "--tmpfs", folder]
        for host, inside in self.gpu_nodes():
            args += ["--dev-bind", host, inside]
        kept = [Path(p) for p in dict.fromkeys(str(Path(p).resolve()) for p in self.keep)]
        kept = [p for p in kept if _under_private(p) and p.exists()]
        made = set()
        for path in kept:
            for parent in reversed([p for p in path.parents if _under_private(p) and str(p) not in PRIVATE]):
                if parent not in made:  # as on the host (bwrap would make them 0700, root's)
                    args += ["--perms", f"{parent.stat().st_mode & 0o7777:o}", "--dir", str(parent)]
                    made.add(parent)
            args += ["--bind", str(path), str(path)]
        devices = Path(self.device_dir).resolve()
        if devices != Path("/dev") and (not _under_private(devices) or any(p in devices.parents for p in kept)):
            args += ["--tmpfs", str(devices)]  # the host's nodes stay out of reach
        args += ["--chdir", self.cwd, "--"]
        if self.uid is not None:
            groups = ["--groups", ",".join(str(g) for g in self.groups)] if self.groups else ["--clear-groups"]
            args += [setpriv, f"--reuid={self.uid}", f"--regid={self.gid}", *groups, "--"]
        return args + list(command)


def software_folders():
    """The folders a sandbox's Python needs, to keep when they lie in a private folder (a clone in /tmp):
    the environment (``sys.prefix``), the Python it was made from (``sys.base_prefix``) and the folder
    aifhub is imported from (an editable install's checkout, outside the environment)."""
    return tuple(dict.fromkeys((sys.prefix, sys.base_prefix, str(Path(__file__).resolve().parents[2]))))


def _under_private(path):
    """Whether ``path`` lies in a folder the sandbox gets a private copy of."""
    return any(path == Path(p) or Path(p) in path.parents for p in PRIVATE)


def children(pid):
    """Pids of ``pid``'s children (``[]`` when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def namespace_init(outer_pid):
    """The host pid of the namespace's pid 1 (bwrap's reaper), or None."""
    found = children(outer_pid)
    return found[0] if found else None


def server_pid(outer_pid):
    """The host pid of the sandbox's single-user server (the reaper's child), or None."""
    init = namespace_init(outer_pid)
    if init is None:
        return None
    found = children(init)
    return found[0] if found else None
