"""Mounts for graded kernels (root only): a size-capped scratch folder, and a mount namespace per kernel.

Each job's scratch folder is a tmpfs of ``GradingManager.scratch_size``: whatever the learner's code
writes lands there, so it can fill neither the disk nor memory beyond that, and it is gone when the
job ends. Each kernel then gets a mount namespace of its own in which the machine is read-only,
``/tmp``, ``/var/tmp`` and ``/dev/shm`` are folders of that scratch (one that holds the scratch
folder itself stays read-only instead), and ``/proc`` shows only the
kernel's own processes (``hidepid=invisible``): nothing is left behind in the machine's ``/tmp``
or ``/dev/shm``, and no command line of anyone else can be read.

Plain syscalls through ctypes (util-linux is not needed for these), kept small: this module runs in
the kernel launcher before every graded kernel.
"""

import ctypes
import errno
import os

CLONE_NEWNS = 0x00020000
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


def isolate_kernel(scratch, network):
    """In the launcher, as root, before dropping to the grading uid: a mount namespace (and, for
    ``network == 'unshare'``, a network namespace) of the kernel's own, as the module says."""
    unshare(CLONE_NEWNS | (CLONE_NEWNET if network == "unshare" else 0))
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here reaches the machine's mounts
    scratch = os.path.abspath(scratch)
    for point, flags in reversed(mounts_below("/")):  # every filesystem read-only for the kernel, but its scratch
        if point == scratch or point.startswith(scratch + "/"):
            continue
        try:  # (keeping the mount's nosuid, nodev and noexec)
            mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
        except OSError:  # a mount that cannot be remounted (locked, or gone) stays as it is
            pass
    tmp, shm = os.path.join(scratch, "tmp"), os.path.join(scratch, "shm")
    for target, source in (("/dev/shm", shm), ("/tmp", tmp), ("/var/tmp", tmp)):
        if not os.path.isdir(target) or os.path.islink(target):
            continue
        if scratch.startswith(target.rstrip("/") + "/"):  # the scratch lies there: it stays read-only instead
            continue
        mount(source, target, None, MS_BIND)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible")
