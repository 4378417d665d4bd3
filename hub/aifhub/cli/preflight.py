"""What ``aifhub up`` checks before it starts the hub: problems that would otherwise show up later,
one failed spawn at a time, under another name.

:func:`problems` returns what stops the start (each says what to do); :func:`limits_summary` says
which of the sandboxes' hard limits this machine enforces, for the banner.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

from ..isolation import namespace as confine
from ..isolation.cgroups import CgroupError, Cgroups
from ..isolation.reach import PROBE_UID, sandbox_obstacles


def singleuser_command():
    return [str(Path(sys.executable).parent / "jupyterhub-singleuser")]


def port_in_use(ip, port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError:
            return True
    return False


def own_proxy_running(state):
    """The proxy of a previous run on this state (the hub takes it over when it starts again)."""
    try:
        pid = int((Path(state) / "proxy.pid").read_text().strip())
        return "configurable-http-proxy" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return False


def problems(ip, port, state, as_root=None):
    """What would make the hub fail to start, or every spawn fail: ``[message]``."""
    as_root = os.geteuid() == 0 if as_root is None else as_root
    found = []
    if port_in_use(ip, port) and not own_proxy_running(state):
        found.append(
            f"port {port} on {ip} is in use (another aifhub or JupyterHub?): stop it, or pass --port with a free port"
        )
    if as_root:
        blocked = [b.message(what) for what, b in sandbox_obstacles(singleuser_command(), Path(state) / "work")]
        found += blocked or namespace_problems(state)
    return found


SANDBOX_IMPORTS = "import aifhub, jupyterhub, ipykernel"
WHERE = (
    "Put aifhub where every user can read it and no private folder hides it, e.g. a clone in /opt/aifhub "
    "with `make setup` and `make run` there."
)


def _said(out):
    lines = [line for line in (out.stderr or out.stdout or "").strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else f"exit status {out.returncode}"


def namespace_problems(state, python=None, uid=PROBE_UID):
    """``[message]``: what stops a learner's uid from running ``python`` (default: this one) from inside the
    namespaces it gets, a sandbox's (bubblewrap: private /tmp, /var/tmp, /run/lock, /dev) and a graded
    kernel's (:mod:`aifhub.grading.runners.probe`). The permission bits pass (:func:`sandbox_obstacles`
    looks first); this finds what they do not say: a folder a private mount hides, a mount that
    forbids running programs, an ACL."""
    python = python or sys.executable
    found = []
    if confine.bwrap_path() and confine.setpriv_path():
        keep = (str(Path(state).resolve().parent), *confine.software_folders(), str(Path(python).parent))
        argv = confine.Confinement(uid=uid, gid=uid, keep=keep).argv([python, "-c", SANDBOX_IMPORTS])
        out = _run(argv)
        if out.returncode != 0:
            found.append(
                f"Learners' sandboxes cannot run {python} from inside their namespace (as uid {uid}, with their own "
                f"/tmp, /var/tmp, /run/lock and /dev): {_said(out)}. Every spawn would fail. {WHERE}"
            )
    probe = [python, "-m", "aifhub.grading.runners.probe", str(Path(state) / "grading-scratch"), str(uid)]
    out = _run(probe)
    if out.returncode != 0:
        found.append(
            f"Graded kernels cannot run {python} from inside their namespace (as uid {uid}, with the machine "
            f"read-only and their own /tmp, /var/tmp and /dev): {_said(out)}. Every grading job would fail "
            f"('Kernel died before replying to kernel_info'). {WHERE}"
        )
    return found


def _run(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(argv, 1, "", f"{type(exc).__name__}: {exc}")


def limits_summary(inventory, as_root=None, device_dir="/dev"):
    """``(lines for the banner, warnings)``: which hard limits the sandboxes get here."""
    as_root = os.geteuid() == 0 if as_root is None else as_root
    if not as_root:
        return [], []
    lines, warnings = [], []
    try:
        groups = Cgroups.detect()
        lines.append(f"limits: memory, CPU and processes per sandbox ({groups.describe()})")
    except CgroupError as exc:
        warnings.append(f"memory, CPU and process limits are NOT enforced: {exc}")
    if confine.bwrap_path() and confine.setpriv_path():
        lines.append("namespaces: each sandbox sees only its own GPUs' device nodes, processes and /tmp (bubblewrap)")
    else:
        warnings.append(
            "bubblewrap (bwrap) or setpriv is missing: GPU courses cannot start, and CPU sandboxes share "
            "/dev, /proc and /tmp. Install them: apt-get install bubblewrap util-linux"
        )
    for device in inventory:
        node = Path(device_dir) / f"nvidia{device.node_minor}"
        if not node.exists():
            warnings.append(
                f"GPU {device.id} has no device node {node}: a sandbox given it sees no GPU "
                "(is the NVIDIA driver loaded?)"
            )
    return lines, warnings
