"""One control group per local sandbox: memory (with swap), CPU time and process limits.

Works on cgroup v2 (the unified hierarchy) and on cgroup v1 (one hierarchy per controller), as
root. Sandboxes' groups are children of the hub's own group, so they count against whatever limits
the hub itself runs under, and siblings of the hub's leaf (``aifhub-hub``, see :func:`prioritise_hub`):
each sandbox weighs an eighth of one process and the hub eight, so that sandboxes share the cores
as equals and use all that the hub leaves idle, but the hub gets a core at once when it needs one
(a storm's booting sandboxes had kept it waiting for 0.1 s). Everything here is plain file I/O
on the cgroup file system: the spawner calls it off the event loop, except :func:`join`, which
the sandbox's own process calls between fork and exec.
"""

import errno
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

CONTROLLERS = ("memory", "cpu", "pids")
HUB_LEAF = "aifhub-hub"  # the hub's processes' own group: CPU priority (and, on v2, room for children)
HUB_CPU_WEIGHT = 8  # the hub, its proxy and service weigh as much as this many busy processes
SANDBOX_CPU_WEIGHT = 1 / 8  # a sandbox weighs this much of one busy process against the hub
CPU_PERIOD_US = 100_000


class CgroupError(RuntimeError):
    """Control groups cannot be used here; the message says why."""


@dataclass(frozen=True)
class Limits:
    """What one sandbox may use. ``None``: no limit of that kind."""

    memory_bytes: int | None = None
    cpu: float | None = None  # cores
    pids: int | None = None
    cpu_weight: float = SANDBOX_CPU_WEIGHT  # how many busy processes it weighs when the cores are contended


def _mounts(mountinfo="/proc/self/mountinfo"):
    """``[(mount point, root within the hierarchy, fstype, super options)]`` of cgroup file systems."""
    out = []
    for line in Path(mountinfo).read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            out.append((fields[4], fields[3], tail[0], set(tail[2].split(","))))
    return out


def _own_groups(proc_cgroup="/proc/self/cgroup"):
    """``{controller or "": path}`` of this process's groups ("" is the v2 hierarchy)."""
    own = {}
    for line in Path(proc_cgroup).read_text().splitlines():
        _hid, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            own[c] = path
    return own


def _within(mount_root, path):
    """The path of a group below its mount (the mount's root may be a group itself, in a container)."""
    if mount_root != "/" and (path == mount_root or path.startswith(mount_root + "/")):
        path = path[len(mount_root) :]
    return path.lstrip("/")


def group_prefix(work_root):
    """``aifhub-<hub>-``: the prefix of one hub's sandbox groups (hubs with other work folders on this machine
    hand out the same uids)."""
    import hashlib

    return f"aifhub-{hashlib.sha256(str(Path(work_root).resolve()).encode()).hexdigest()[:10]}-"


def _outside_hub_leaf(path):
    """The hub's own group, when it has moved into its leaf (see :func:`prioritise_hub`)."""
    return path.rpartition("/")[0] if path.rsplit("/", 1)[-1] == HUB_LEAF else path


def prioritise_hub(pid=None, mountinfo="/proc/self/mountinfo", proc_cgroup="/proc/self/cgroup"):
    """Move ``pid`` (default: this process, and so what it starts later) into its own CPU group that
    weighs as much as HUB_CPU_WEIGHT busy processes: the hub answers quickly while sandboxes boot.

    Returns the group's directory, or None when cgroups cannot be used (not root, none mounted).
    """
    if os.geteuid() != 0:
        return None
    pid = os.getpid() if pid is None else pid
    try:
        mounts, own = _mounts(mountinfo), _own_groups(proc_cgroup)
        for point, root, fstype, opts in mounts:
            if fstype == "cgroup" and "cpu" in opts and "cpu" in own:
                leaf = Path(point) / _outside_hub_leaf(_within(root, own["cpu"])) / HUB_LEAF
                weight = ("cpu.shares", 1024 * HUB_CPU_WEIGHT)
                break
        else:
            point, root = next((Path(p), r) for p, r, t, _ in mounts if t == "cgroup2")
            if "cpu" not in _read(point / "cgroup.controllers").split():
                return None
            own_dir = point / _outside_hub_leaf(_within(root, own[""]))
            leaf = own_dir / HUB_LEAF
            weight = ("cpu.weight", 100 * HUB_CPU_WEIGHT)
        leaf.mkdir(exist_ok=True)
        _write(leaf / "cgroup.procs", pid)
        if weight[0] == "cpu.weight":
            _try(own_dir / "cgroup.subtree_control", "+cpu")
        _write(leaf / weight[0], weight[1])
        return leaf
    except (OSError, StopIteration, KeyError):
        return None


def _write(path, value):
    with open(path, "w") as f:
        f.write(str(value))


def _read(path, default=""):
    try:
        return Path(path).read_text()
    except OSError:
        return default


@dataclass
class SandboxGroup:
    """The group (v2) or groups (v1, one per controller) of one sandbox."""

    version: int
    dirs: list = field(default_factory=list)  # v2: [dir]; v1: one per controller, in the order of CONTROLLERS

    @property
    def paths(self):
        return [str(d) for d in self.dirs]

    def _dir(self, controller):
        """The directory holding ``controller``'s files (v1 keeps them in the order of CONTROLLERS)."""
        return self.dirs[0] if self.version == 2 else self.dirs[CONTROLLERS.index(controller)]

    def join(self, pid=None):
        """Put ``pid`` (default: this process) in the group. Safe between fork and exec."""
        pid = os.getpid() if pid is None else pid
        for d in self.dirs:
            _write(d / "cgroup.procs", pid)

    def pids(self):
        found = set()
        for d in self.dirs:
            for line in _read(d / "cgroup.procs").split():
                found.add(int(line))
        return found

    def oom_kills(self):
        """How many processes the kernel killed for going over the memory limit."""
        if self.version == 2:
            text = _read(self.dirs[0] / "memory.events")
        else:
            text = _read(self._dir("memory") / "memory.oom_control")
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def cpu_seconds(self):
        """CPU time the group's processes have used, all of them, those that ended too (None when unknown)."""
        if self.version == 2:
            for line in _read(self.dirs[0] / "cpu.stat").splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec" and value.strip().isdigit():
                    return int(value) / 1e6
            return None
        value = _read(self._dir("cpu") / "cpuacct.usage").strip()  # where cpu and cpuacct share a hierarchy
        if value.isdigit():
            return int(value) / 1e9
        return self._process_cpu_seconds()

    def _process_cpu_seconds(self):
        """cgroup v1 without cpuacct in the cpu hierarchy: the CPU time of the group's processes and of their
        children they reaped (``/proc/<pid>/stat``). It drops for a moment when a process ends before its
        parent reaps it; readers take a drop as use."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # it ended meanwhile
            total += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
        return total / ticks

    def kill_all(self, timeout=5.0):
        """SIGKILL every process in the group; True when it is empty afterwards."""
        if self.version == 2 and (self.dirs[0] / "cgroup.kill").exists():
            try:
                _write(self.dirs[0] / "cgroup.kill", 1)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids:
                return True
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def remove(self):
        """Remove the group once it is empty (killing what is left). Returns what could not be removed."""
        self.kill_all()
        left = []
        for d in self.dirs:
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                left.append(f"{d}: {exc.strerror}")
        return left


class Cgroups:
    """Where this machine's control groups are, and how to make one for a sandbox."""

    def __init__(self, version, parents):
        self.version = version
        self.parents = parents  # v2: [parent dir]; v1: {controller: parent dir}

    def describe(self):
        where = self.parents[0] if self.version == 2 else ", ".join(str(p) for p in self.parents.values())
        return f"cgroup v{self.version} ({where})"

    @classmethod
    def detect(cls, mountinfo="/proc/self/mountinfo", proc_cgroup="/proc/self/cgroup"):
        """The cgroup set-up of this machine, with the sandboxes' groups below the hub's own group.

        Raises :class:`CgroupError` saying what is missing.
        """
        if os.geteuid() != 0:
            raise CgroupError("the hub does not run as root, so it cannot create control groups")
        try:
            mounts, own = _mounts(mountinfo), _own_groups(proc_cgroup)
        except OSError as exc:
            raise CgroupError(f"cannot read the cgroup set-up ({exc})") from exc
        v1 = {}
        for point, root, fstype, opts in mounts:
            if fstype == "cgroup":
                for c in CONTROLLERS:
                    if c in opts and c in own:
                        v1[c] = Path(point) / _outside_hub_leaf(_within(root, own[c]))
        if len(v1) == len(CONTROLLERS):
            return cls(1, v1)
        unified = next(((Path(p), r) for p, r, t, _ in mounts if t == "cgroup2"), None)
        if unified is not None and "" in own:
            point, root = unified
            available = set(_read(point / "cgroup.controllers").split())
            missing = [c for c in CONTROLLERS if c not in available and c not in v1]
            if not missing:
                return cls(2, [point / _outside_hub_leaf(_within(root, own[""]))])
            if v1:
                raise CgroupError(f"the controllers {', '.join(missing)} are in neither cgroup hierarchy")
        raise CgroupError(
            "no cgroup file system with the memory, cpu and pids controllers is mounted (expected /sys/fs/cgroup)"
        )

    def prepare(self):
        """cgroup v2: enable the controllers for the sandboxes' groups in the hub's own group (whose
        processes move to its leaf first: a group with children may hold no processes itself)."""
        if self.version == 1:
            return
        own = self.parents[0]
        wanted = " ".join(f"+{c}" for c in CONTROLLERS)
        try:
            _write(own / "cgroup.subtree_control", wanted)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise CgroupError(f"cannot enable {wanted} in {own}: {exc.strerror}") from exc
            leaf = own / HUB_LEAF
            leaf.mkdir(exist_ok=True)
            for pid in _read(own / "cgroup.procs").split():
                try:
                    _write(leaf / "cgroup.procs", pid)
                except OSError:
                    pass  # it exited meanwhile
            _write(own / "cgroup.subtree_control", wanted)

    def sweep(self, prefix):
        """Remove the empty groups whose names start with ``prefix`` (left by sandboxes that ended while
        their hub was down). Returns how many were removed."""
        removed = 0
        for parent in [self.parents[0]] if self.version == 2 else list(self.parents.values()):
            for d in parent.glob(f"{prefix}*"):
                try:
                    d.rmdir()  # fails on a group that still holds processes (or children)
                    removed += 1
                except OSError:
                    pass
        return removed

    def group(self, name):
        """The (not yet created) group of the sandbox ``name``."""
        if self.version == 2:
            return SandboxGroup(2, [self.parents[0] / name])
        return SandboxGroup(1, [self.parents[c] / name for c in CONTROLLERS])

    def create(self, name, limits):
        """Create (or reuse) the sandbox group ``name`` with ``limits``. Returns the :class:`SandboxGroup`."""
        group = self.group(name)
        for d in group.dirs:
            d.mkdir(exist_ok=True)
        if self.version == 2:
            d = group.dirs[0]
            _write(d / "memory.max", limits.memory_bytes or "max")
            if (d / "memory.swap.max").exists():
                _write(d / "memory.swap.max", 0 if limits.memory_bytes else "max")
            quota = int(limits.cpu * CPU_PERIOD_US) if limits.cpu else "max"
            _write(d / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            _write(d / "cpu.weight", max(1, min(10000, round(100 * limits.cpu_weight))))
            _write(d / "pids.max", limits.pids or "max")
        else:
            memory, cpu, pids = group.dirs
            if limits.memory_bytes:
                memsw = memory / "memory.memsw.limit_in_bytes"
                if memsw.exists():  # raise memsw first when growing: it may never be below the limit
                    _try(memsw, -1)
                _write(memory / "memory.limit_in_bytes", limits.memory_bytes)
                if memsw.exists():
                    _write(memsw, limits.memory_bytes)  # no swap beyond the limit
            _write(cpu / "cpu.cfs_period_us", CPU_PERIOD_US)
            _write(cpu / "cpu.cfs_quota_us", int(limits.cpu * CPU_PERIOD_US) if limits.cpu else -1)
            _write(cpu / "cpu.shares", max(2, round(1024 * limits.cpu_weight)))
            _write(pids / "pids.max", limits.pids or "max")
        return group

    def existing(self, paths):
        """The group of a sandbox from its saved ``paths`` (after a hub restart), if they still exist."""
        dirs = [Path(p) for p in paths]
        if not dirs or not all(d.is_dir() for d in dirs):
            return None
        return SandboxGroup(self.version, dirs)


def _try(path, value):
    try:
        _write(path, value)
    except OSError:
        pass
