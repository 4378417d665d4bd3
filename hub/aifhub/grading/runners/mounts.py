"""Mounts for graded kernels (root only): a size-capped scratch folder, and a mount namespace per kernel.

Each job's scratch folder is a tmpfs of ``GradingManager.scratch_size``: whatever the learner's code
writes lands there, so it can fill neither the disk nor memory beyond that, and it is gone when the
job ends. Each kernel then gets a mount namespace of its own in which the machine is read-only,
``/tmp``, ``/var/tmp`` and ``/dev/shm`` are folders of that scratch (one that holds the scratch
folder itself stays read-only instead), ``/dev`` holds only the basic nodes (null, zero, full,
random, urandom, tty) and the job's GPUs' nodes, and ``/proc`` shows only the kernel's own
processes (``hidepid=invisible``): nothing is left behind in the machine's ``/tmp`` or
``/dev/shm``, no other device node can be opened, and no command line of anyone else can be read.
It gets an IPC namespace of its own too: a System V shared-memory segment or message queue it
makes is gone with the job, and no other job can attach to it.

The software the kernel runs (the environment, the folder aifhub is imported from) stays visible
where a private ``/tmp`` or ``/var/tmp`` would hide it (a checkout in ``/var/tmp/x``): it is bound
back, read-only, at its own path.

Plain syscalls through ctypes (util-linux is not needed for these), kept small: this module runs in
the kernel launcher before every graded kernel.
"""

import ctypes
import errno
import os
import stat

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
O_PATH = getattr(os, "O_PATH", 0o10000000)

BASIC_NODES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
}
PRIVATE = ("/tmp", "/var/tmp", "/dev/shm")  # what the kernel gets of the scratch instead of the machine's

_libc = None


def libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source, target, fstype=None, flags=0, data=None):
    enc = lambda v: None if v is None else os.fsencode(v)  # noqa: E731
    _check(libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def umount(target):
    """Detach the mount at ``target`` (lazily: it goes when the last process using it is gone)."""
    result = libc().umount2(os.fsencode(target), MNT_DETACH)
    if result != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):  # not a mount point (any more)
        _check(result, f"umount {target}")


def unshare(flags):
    _check(libc().unshare(ctypes.c_int(flags)), "unshare")


def mount_scratch(path, size_bytes):
    """A tmpfs of ``size_bytes`` at ``path`` (a folder of root's), private to root until shared out."""
    mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={int(size_bytes)},mode=0711,uid=0,gid=0")


PER_MOUNT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}


def mounts_below(path):
    """``[(mount point, per-mount flags)]`` at or below ``path`` (from /proc/self/mountinfo), deepest first."""
    path = os.path.abspath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")
            flags = sum(PER_MOUNT_FLAGS.get(opt, 0) for opt in fields[5].split(","))
            if point == path or point.startswith(path.rstrip("/") + "/"):
                found.append((point, flags))
    return sorted(found, key=lambda m: len(m[0]), reverse=True)


def mount_points_below(path):
    return [point for point, _ in mounts_below(path)]


def release_scratch(path):
    """Unmount the job's scratch (and anything below it); True when something was mounted there."""
    points = mount_points_below(path)
    for point in points:
        umount(point)
    return bool(points)


def _under(path, folder):
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _hidden_by(path, targets):
    """The private folder among ``targets`` that would hide ``path``, or None."""
    return next((t for t in targets if _under(path, t)), None)


def _open_path(path):
    return os.open(path, O_PATH | os.O_CLOEXEC)


def _bind_fd(fd, target, flags=0):
    """Bind what ``fd`` (an O_PATH descriptor opened before a mount hid it) names onto ``target``."""
    mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
    try:
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
    except OSError:
        pass


def _make_parents(path, below, modes):
    """The folders between ``below`` and ``path`` (itself included), as root, with the host's modes."""
    for parent in [*reversed(_parents(path, below)), path]:
        if not os.path.isdir(parent):
            os.mkdir(parent, modes.get(parent, 0o755))
            os.chmod(parent, modes.get(parent, 0o755))  # whatever the umask


def _parents(path, below):
    out, p = [], os.path.dirname(path)
    while p != below and _under(p, below):
        out.append(p)
        p = os.path.dirname(p)
    return out


def _minimal_dev(scratch, nodes):
    """A tmpfs at ``/dev`` with ``nodes`` (``[(O_PATH descriptor of the host's node, name)]``) bound in,
    the usual links and ``shm`` (the scratch's); read-only once made."""
    mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755,uid=0,gid=0")
    for fd, name in nodes:
        target = os.path.join("/dev", name)
        if stat.S_ISDIR(os.fstat(fd).st_mode):  # nvidia-caps is a folder of nodes
            os.mkdir(target, 0o755)
        else:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
        mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
    for name, points_to in DEV_LINKS.items():
        os.symlink(points_to, os.path.join("/dev", name))
    os.mkdir("/dev/shm", 0o755)
    if not _under(scratch, "/dev"):
        mount(os.path.join(scratch, "shm"), "/dev/shm", None, MS_BIND)
    mount(None, "/dev", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755,uid=0,gid=0")


def isolate_kernel(scratch, network, devices=(), keep=(), device_dir="/dev"):
    """In the launcher, as root, before dropping to the grading uid: a mount and an IPC namespace (and, for
    ``network == 'unshare'``, a network namespace) of the kernel's own, as the module says.

    ``devices``: names of the job's GPUs' nodes in ``device_dir`` (``nvidia0``, ``nvidiactl``...), bound
    into its ``/dev`` when they exist; ``keep``: folders the kernel's Python needs (bound back where a
    private folder would hide them)."""
    unshare(CLONE_NEWNS | CLONE_NEWIPC | (CLONE_NEWNET if network == "unshare" else 0))
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here reaches the machine's mounts
    scratch = os.path.abspath(scratch)
    # what the new mounts will hide, held open now: the host's device nodes, the software in a private folder
    nodes = []
    for folder, name in [*(("/dev", n) for n in BASIC_NODES), *((device_dir, n) for n in devices)]:
        try:
            nodes.append((_open_path(os.path.join(folder, name)), name))
        except OSError:  # not on this machine (a GPU's node: the kernel sees no GPU)
            pass
    private = [t for t in PRIVATE if os.path.isdir(t) and not os.path.islink(t) and not _under(scratch, t)]
    kept = []
    for path in dict.fromkeys(os.path.realpath(p) for p in keep):
        folder = _hidden_by(path, private)
        if folder and os.path.isdir(path):
            modes = {p: os.stat(p).st_mode & 0o7777 for p in [path, *_parents(path, folder)]}
            kept.append((path, _open_path(path), modes, folder))
    for point, flags in reversed(mounts_below("/")):  # every filesystem read-only for the kernel, but its scratch
        if point == scratch or point.startswith(scratch + "/"):
            continue
        try:  # (keeping the mount's nosuid, nodev and noexec)
            mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
        except OSError:  # a mount that cannot be remounted (locked, or gone) stays as it is
            pass
    tmp = os.path.join(scratch, "tmp")
    for target in private:
        if target != "/dev/shm":
            mount(tmp, target, None, MS_BIND)
    if not _under(scratch, "/dev"):
        _minimal_dev(scratch, nodes)
    for path, fd, modes, folder in kept:  # made as root in the job's tmp: the kernel's uid may not write there
        _make_parents(path, folder, modes)
        _bind_fd(fd, path)
    for fd in [fd for fd, _ in nodes] + [fd for _, fd, _, _ in kept]:
        os.close(fd)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible")
