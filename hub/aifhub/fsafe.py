"""File operations for code that runs as root in folders that someone else can write.

A learner owns their work folder; an instructor's sandbox reaches parts of its course's grading
directory; a graded kernel writes its scratch folder. Root acting on any of them by path would
follow whatever link was planted there (a dangling link becomes a new root-owned file, a linked
folder sends writes elsewhere, ``chown`` gives the link's target away). So root code uses this
module instead of :mod:`shutil` and path-based ``os`` calls:

- a folder is entered one name at a time, relative to the open descriptor of its parent, with
  ``O_NOFOLLOW | O_DIRECTORY``: a link (or anything but a folder) is refused by the kernel at the
  moment of use, so swapping one in between a check and its use gains nothing;
- files are created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (never opened through a name that
  already exists) and replaced by renaming a fresh file over the name;
- owners and modes are set with ``fchown``/``fchmod`` on a descriptor, never by path, and a
  regular file with more than one hard link is never given away (it may be someone else's);
- links, FIFOs, sockets and devices are skipped (never opened), each with a log line;
- names are checked against ``NAME_MAX`` and trees against a depth, so a learner's over-long
  path is a refusal, not a crash.

Each primitive takes a :class:`Dir` (an open directory) and a single name; :func:`open_dir` opens
a path below a trusted base the same way.
"""

import errno
import io
import logging
import os
import secrets
import stat
import tarfile
from contextlib import contextmanager

log = logging.getLogger(__name__)

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
NAME_MAX = 255
MAX_DEPTH = 64
CHUNK = 1024 * 1024
# what a folder's owner changing it under us looks like: the entry is skipped, never followed
RACED = (errno.EEXIST, errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EISDIR)


class UnsafePath(OSError):
    """A name that is a link or not what was expected (a folder, a plain file), or a path too long to use."""


def kind(mode):
    """What a file type is called in log lines and messages."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a file"
    return "a special file"


def check_name(name):
    """One path component: not empty, not '.', '..', no '/', at most NAME_MAX bytes."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise UnsafePath(errno.EINVAL, f"not a plain file name: {name!r}")
    if len(os.fsencode(name)) > NAME_MAX:
        raise UnsafePath(errno.ENAMETOOLONG, f"a name is longer than {NAME_MAX} bytes: {name[:40]!r}...")
    return name


class Dir:
    """An open directory: every operation names one entry of it, relative to its descriptor."""

    def __init__(self, fd, path):
        self.fd = fd
        self.path = str(path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __repr__(self):
        return f"Dir({self.path!r})"

    def join(self, name):
        return os.path.join(self.path, name)

    # -- looking -------------------------------------------------------------

    def lstat(self, name):
        """The entry's own status (a link is reported as a link), or None when there is none."""
        try:
            return os.stat(check_name(name), dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def stat(self):
        return os.fstat(self.fd)

    def names(self):
        """The entries' names, sorted."""
        with os.scandir(self.fd) as it:
            return sorted(entry.name for entry in it)

    def entries(self):
        """``[(name, lstat)]`` of the entries, sorted by name (an entry removed meanwhile is left out)."""
        out = []
        for name in self.names():
            st = self.lstat(name)
            if st is not None:
                out.append((name, st))
        return out

    # -- folders -------------------------------------------------------------

    def sub(self, name):
        """Open the folder ``name``; :class:`UnsafePath` when it is a link or not a folder."""
        check_name(name)
        try:
            fd = os.open(name, O_DIR, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                st = self.lstat(name)
                what = kind(st.st_mode) if st else "gone"
                raise UnsafePath(exc.errno, f"{self.join(name)} is {what}, not a folder") from None
            raise
        return Dir(fd, self.join(name))

    def mkdir(self, name, mode=0o700, uid=None, gid=None, exist_ok=True):
        """The folder ``name``, made when missing (owner and mode set on the new folder only when made)."""
        check_name(name)
        try:
            os.mkdir(name, mode, dir_fd=self.fd)
            made = True
        except FileExistsError:
            if not exist_ok:
                raise
            made = False
        d = self.sub(name)
        if made:
            try:
                st = d.stat()
                own(d.fd, st, uid, gid, mode)
            except BaseException:
                d.close()
                raise
        return d

    def ensure(self, name, mode=0o700, uid=None, gid=None, aside=True, keep=False):
        """The folder ``name`` as a real folder: made when missing; a link or file in its place is
        moved aside (renamed, never followed) with a log line. The mode (and owner, when given) are
        applied to the folder found (unless ``keep``, or it belongs to someone other than root or ``uid``)."""
        st = self.lstat(name)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            if not aside:
                raise UnsafePath(errno.ENOTDIR, f"{self.join(name)} is {kind(st.st_mode)}, not a folder")
            moved = f"{name}.not-a-folder-{secrets.token_hex(3)}"[-NAME_MAX:]
            os.rename(name, moved, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            log.warning(
                "Moved %s aside to %s: it was %s where a folder belongs (not followed)",
                self.join(name),
                moved,
                kind(st.st_mode),
            )
        d = self.mkdir(name, mode, uid, gid)
        if keep:
            return d
        try:
            st = d.stat()
            if st.st_uid in (0, os.geteuid()) or (uid is not None and st.st_uid == uid):
                own(d.fd, st, uid, gid, mode)
            else:
                log.warning("Left %s as it is: it belongs to uid %s, not to root or %s", d.path, st.st_uid, uid)
        except BaseException:
            d.close()
            raise
        return d

    def makedirs(self, parts, mode=0o700, uid=None, gid=None):
        """Folders ``parts`` (a sequence of names) below this one, each entered without following links."""
        d = Dir(os.dup(self.fd), self.path)
        for part in parts:
            try:
                nxt = d.mkdir(part, mode, uid, gid)
            finally:
                d.close()
            d = nxt
        return d

    def remove(self, name):
        """Remove the entry ``name`` (a folder with all it holds; a link itself, never its target)."""
        import shutil

        st = self.lstat(name)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=self.fd)  # descriptor-based: follows no link
        else:
            os.unlink(name, dir_fd=self.fd)

    def rename(self, src, dst, dst_dir=None):
        """Rename the entry ``src`` to ``dst`` (in ``dst_dir``, default here), replacing what ``dst`` was."""
        os.rename(check_name(src), check_name(dst), src_dir_fd=self.fd, dst_dir_fd=(dst_dir or self).fd)

    def replace_dir(self, name, fill, mode=0o700, uid=None, gid=None):
        """Build a new folder with ``fill(Dir)`` under a temporary name, then rename it over ``name``."""
        tmp = f".{name}.new-{secrets.token_hex(4)}"[-NAME_MAX:]
        with self.mkdir(tmp, mode, uid, gid, exist_ok=False) as d:
            try:
                result = fill(d)
            except BaseException:
                self.remove(tmp)
                raise
        old = self.lstat(name)
        if old is not None and stat.S_ISDIR(old.st_mode):
            trash = f".{name}.old-{secrets.token_hex(4)}"[-NAME_MAX:]
            self.rename(name, trash)
            self.rename(tmp, name)
            self.remove(trash)
        else:
            if old is not None:
                self.remove(name)
            self.rename(tmp, name)
        return result

    # -- files ---------------------------------------------------------------

    def open_file(self, name):
        """A descriptor of the plain file ``name`` for reading; :class:`UnsafePath` for anything else."""
        check_name(name)
        try:
            fd = os.open(name, O_READ, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(exc.errno, f"{self.join(name)} is a symbolic link (not followed)") from None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise UnsafePath(errno.EINVAL, f"{self.join(name)} is {kind(st.st_mode)}, not a file")
        return fd

    def read(self, name, limit=64 * 1024 * 1024):
        """The bytes of the plain file ``name`` (never through a link), at most ``limit``."""
        fd = self.open_file(name)
        with os.fdopen(fd, "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise UnsafePath(errno.EFBIG, f"{self.join(name)} is larger than {limit} bytes")
        return data

    def read_text(self, name, limit=1024 * 1024):
        return self.read(name, limit).decode()

    def create(self, name, mode=0o600, uid=None, gid=None):
        """A new file ``name`` (it must not exist), open for writing as a binary file object."""
        fd = os.open(check_name(name), O_NEW, mode, dir_fd=self.fd)
        try:
            own(fd, os.fstat(fd), uid, gid, mode)
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "wb")

    def write(self, name, data, mode=0o600, uid=None, gid=None):
        """``name`` holding ``data`` (bytes or str): a fresh file renamed over whatever ``name`` was."""
        if isinstance(data, str):
            data = data.encode()
        tmp = f".{name}.new-{secrets.token_hex(4)}"[-NAME_MAX:]
        try:
            with self.create(tmp, mode, uid, gid) as f:
                f.write(data)
            self.rename(tmp, name)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=self.fd)
            except OSError:
                pass
            raise

    def write_if_changed(self, name, data, mode=0o600, uid=None, gid=None):
        """As :meth:`write`, unless ``name`` is a plain file that already holds ``data``; keeps its
        owner and mode when it is one."""
        if isinstance(data, str):
            data = data.encode()
        st = self.lstat(name)
        if st is not None and stat.S_ISREG(st.st_mode):
            try:
                if self.read(name, len(data)) == data:
                    return False
            except UnsafePath:
                pass
            mode, uid, gid = st.st_mode & 0o7777, st.st_uid, st.st_gid
        self.write(name, data, mode, uid, gid)
        return True

    def copy_file_in(self, src_fd, name, mode=0o600, uid=None, gid=None, limit=None):
        """A new file ``name`` with the bytes read from the open descriptor ``src_fd``; returns the size."""
        size = 0
        with self.create(name, mode, uid, gid) as out:
            while True:
                chunk = os.read(src_fd, CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if limit is not None and size > limit:
                    raise UnsafePath(errno.EFBIG, f"{self.join(name)}: more than {limit} bytes")
                out.write(chunk)
        return size


def own(fd, st, uid=None, gid=None, mode=None):
    """``fchown``/``fchmod`` the open ``fd`` (whose status is ``st``) when something changes."""
    if (uid is not None and st.st_uid != uid) or (gid is not None and st.st_gid != gid):
        os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
    if mode is not None and (st.st_mode & 0o7777) != mode:
        os.fchmod(fd, mode)


def open_dir(path, trusted=None):
    """Open the folder ``path``. Its part up to ``trusted`` (a folder of root's that nobody else can
    change) is opened as a path; each name below it without following links (:class:`UnsafePath`)."""
    path = os.path.abspath(os.fspath(path))
    base = os.path.abspath(os.fspath(trusted)) if trusted is not None else path
    rel = os.path.relpath(path, base)
    if rel.startswith(".."):
        raise ValueError(f"{path} does not lie below {base}")
    d = Dir(os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), base)
    if rel == ".":
        return d
    parts = rel.split(os.sep)
    try:
        for part in parts:
            nxt = d.sub(part)
            d.close()
            d = nxt
    except BaseException:
        d.close()
        raise
    return d


@contextmanager
def opened(path, trusted=None):
    d = open_dir(path, trusted)
    try:
        yield d
    finally:
        d.close()


def skipped(d, name, st, why=None):
    log.warning("Skipped %s: %s", d.join(name), why or f"it is {kind(st.st_mode)} (not followed)")


def walk(d, skip=None, depth=0, rel=""):
    """Every entry below the open folder ``d``, depth first: ``(dir, name, lstat, relpath)``; folders
    are yielded before what they hold and entered without following links. ``skip(relpath, lstat)``
    true leaves an entry (and, for a folder, what it holds) out."""
    if depth > MAX_DEPTH:
        log.warning("Skipped what lies below %s: deeper than %d folders", d.path, MAX_DEPTH)
        return
    for name, st in d.entries():
        path = f"{rel}/{name}" if rel else name
        if skip and skip(path, st):
            continue
        yield d, name, st, path
        if stat.S_ISDIR(st.st_mode):
            try:
                sub = d.sub(name)
            except (UnsafePath, FileNotFoundError) as exc:  # swapped meanwhile
                log.warning("Skipped %s: %s", d.join(name), exc)
                continue
            with sub:
                yield from walk(sub, skip, depth + 1, path)


def set_tree(d, *, uid=None, gid=None, dir_mode=None, file_mode=None, skip=None):
    """Owner and modes of the folder ``d`` and everything below it, through descriptors.

    ``dir_mode``/``file_mode`` are ints or ``callable(lstat) -> int``. Links and special files are
    skipped with a log line; so is a file with more than one hard link (it may be someone else's)."""

    def mode_for(m, st):
        return m(st) if callable(m) else m

    st = d.stat()
    own(d.fd, st, uid, gid, mode_for(dir_mode, st))
    count = 1
    for parent, name, st, _rel in walk(d, skip):
        if stat.S_ISDIR(st.st_mode):
            try:
                with parent.sub(name) as sub:
                    fst = sub.stat()
                    own(sub.fd, fst, uid, gid, mode_for(dir_mode, fst))
            except (UnsafePath, FileNotFoundError) as exc:
                log.warning("Skipped %s: %s", parent.join(name), exc)
                continue
        elif stat.S_ISREG(st.st_mode):
            if st.st_nlink > 1:
                skipped(parent, name, st, f"it has {st.st_nlink} hard links (never given away)")
                continue
            try:
                fd = parent.open_file(name)
            except (UnsafePath, FileNotFoundError) as exc:
                log.warning("Skipped %s: %s", parent.join(name), exc)
                continue
            try:
                fst = os.fstat(fd)
                if fst.st_nlink > 1:
                    skipped(parent, name, fst, f"it has {fst.st_nlink} hard links (never given away)")
                    continue
                own(fd, fst, uid, gid, mode_for(file_mode, fst))
            finally:
                os.close(fd)
        else:
            skipped(parent, name, st)
            continue
        count += 1
    return count


def copy_tree(
    src,
    dst,
    *,
    skip=None,
    existing="replace",
    uid=None,
    gid=None,
    dir_mode=0o700,
    file_mode=None,
    max_files=None,
    max_bytes=None,
    depth=0,
    rel="",
):
    """Copy the plain files and folders below the open folder ``src`` into the open folder ``dst``.

    Nothing is followed on either side: links and special files of ``src`` are skipped with a log
    line, and in ``dst`` files are only ever created new. ``existing``: what to do with a name that
    is already in ``dst``: 'keep' (leave the file; enter the folder and fill in what is missing),
    'replace' (remove it first). ``file_mode`` None keeps each file's permission bits (and-ed with
    0o777). Returns ``(files, bytes)`` copied. ``max_files``/``max_bytes`` raise :class:`UnsafePath`."""
    files = size = 0
    if depth > MAX_DEPTH:
        log.warning("Skipped what lies below %s: deeper than %d folders", src.path, MAX_DEPTH)
        return files, size
    for name, st in src.entries():
        path = f"{rel}/{name}" if rel else name
        if skip and skip(path, st):
            continue
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            skipped(src, name, st)
            continue
        there = dst.lstat(name)
        if there is not None:
            if existing == "keep":
                if not (stat.S_ISDIR(st.st_mode) and stat.S_ISDIR(there.st_mode)):
                    if not stat.S_ISREG(there.st_mode) and not stat.S_ISDIR(there.st_mode):
                        skipped(dst, name, there, f"it is {kind(there.st_mode)}; left as it is, not followed")
                    continue
            else:
                dst.remove(name)
                there = None
        if stat.S_ISDIR(st.st_mode):
            try:
                s = src.sub(name)
            except (UnsafePath, FileNotFoundError) as exc:
                log.warning("Skipped %s: %s", src.join(name), exc)
                continue
            with s:
                try:
                    d = dst.mkdir(name, dir_mode, uid, gid) if there is None else dst.sub(name)
                except OSError as exc:
                    if not isinstance(exc, UnsafePath) and exc.errno not in RACED:
                        raise
                    log.warning("Skipped %s: %s", dst.join(name), exc)
                    continue
                with d:
                    f, b = copy_tree(
                        s,
                        d,
                        skip=skip,
                        existing=existing,
                        uid=uid,
                        gid=gid,
                        dir_mode=dir_mode,
                        file_mode=file_mode,
                        depth=depth + 1,
                        rel=path,
                        max_files=None if max_files is None else max_files - files,
                        max_bytes=None if max_bytes is None else max_bytes - size,
                    )
            files += f
            size += b
            continue
        files += 1
        if max_files is not None and files > max_files:
            raise UnsafePath(errno.EFBIG, f"more than {max_files} files")
        try:
            fd = src.open_file(name)
        except (UnsafePath, FileNotFoundError) as exc:
            log.warning("Skipped %s: %s", src.join(name), exc)
            continue
        try:
            mode = (os.fstat(fd).st_mode & 0o777) if file_mode is None else file_mode
            size += dst.copy_file_in(fd, name, mode, uid, gid, limit=None if max_bytes is None else max_bytes - size)
        except OSError as exc:
            if exc.errno not in RACED:
                raise
            # made (or its folder removed) meanwhile by the folder's owner: theirs, left alone
            log.warning("Skipped %s: it changed while copying (%s); left as it is", dst.join(name), exc.strerror)
        finally:
            os.close(fd)
        if max_bytes is not None and size > max_bytes:
            raise UnsafePath(errno.EFBIG, f"more than {max_bytes} bytes")
    return files, size


def pack(d, skip=None):
    """A tar.gz (bytes) of the plain files below the open folder ``d``, names relative to it.

    Files are read through descriptors opened without following links; links and special files
    are left out with a log line."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for parent, name, st, rel in walk(d, skip):
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                skipped(parent, name, st)
                continue
            try:
                fd = parent.open_file(name)
            except (UnsafePath, FileNotFoundError) as exc:
                log.warning("Skipped %s: %s", parent.join(name), exc)
                continue
            with os.fdopen(fd, "rb") as f:
                fst = os.fstat(f.fileno())
                info = tarfile.TarInfo(rel)
                info.size = fst.st_size
                info.mtime = int(fst.st_mtime)
                info.mode = fst.st_mode & 0o644 | 0o600
                tar.addfile(info, f)
    return buf.getvalue()
