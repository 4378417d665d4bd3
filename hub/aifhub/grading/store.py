"""Files in and out of the exchange: tar.gz archives checked on the way in, and the folders they land in.

The service runs as root: every folder here is entered without following links and every file
is read or created through a descriptor (:mod:`aifhub.fsafe`).
"""

import errno
import hashlib
import io
import stat
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from .. import fsafe

SKIP = (".ipynb_checkpoints", "__pycache__")
MAX_PATH = 1024  # characters of one member's name: far beyond what a course needs, below PATH_MAX


class TooLarge(ValueError):
    """A submission over the course's size limit."""


class TooMany(ValueError):
    """A submission with more files than a course may receive."""


class BadArchive(ValueError):
    """An upload that is not a plain tar.gz of files and folders."""


def _skip(rel, st):
    return any(part in SKIP for part in rel.split("/"))


def pack(folder, trusted=None):
    """A tar.gz (bytes) of the plain files under ``folder``, with names relative to it (no links)."""
    with fsafe.opened(folder, trusted) as d:
        return fsafe.pack(d, skip=_skip)


def _member_parts(m):
    name = PurePosixPath(m.name)
    if name.is_absolute() or ".." in name.parts or not name.parts:
        raise BadArchive(f"refusing the path {m.name[:80]!r} in the upload")
    if len(m.name) > MAX_PATH:
        raise BadArchive(f"refusing a path of {len(m.name)} characters in the upload (at most {MAX_PATH})")
    if len(name.parts) > fsafe.MAX_DEPTH:
        raise BadArchive(f"refusing a path {len(name.parts)} folders deep in the upload (at most {fsafe.MAX_DEPTH})")
    for part in name.parts:
        if len(part.encode()) > fsafe.NAME_MAX:
            raise BadArchive(f"refusing a name longer than {fsafe.NAME_MAX} bytes in the upload ({part[:40]!r}...)")
    return name.parts


def check_members(tar, limit_bytes, max_files):
    """The archive's members, checked: plain files and folders, safe names, each file once and not
    also a folder, at most ``max_files`` files and ``limit_bytes`` in all."""
    total, files, members = 0, {}, []
    dirs = set()
    try:
        for count, m in enumerate(tar, 1):
            if count > 2 * max_files:
                raise TooMany(
                    f"the upload has more than {2 * max_files} entries (this course takes at most {max_files} files)"
                )
            parts = _member_parts(m)
            if not (m.isfile() or m.isdir()):
                raise BadArchive(
                    f"refusing {m.name[:80]!r}: only plain files and folders may be handed in "
                    "(no links, FIFOs or devices)"
                )
            for i in range(1, len(parts)):
                if parts[:i] in files:
                    raise BadArchive(f"refusing {m.name[:80]!r}: {'/'.join(parts[:i])} is also a file in the upload")
                dirs.add(parts[:i])
            if m.isdir():
                if parts in files:
                    raise BadArchive(f"refusing {m.name[:80]!r}: it is also a file in the upload")
                dirs.add(parts)
                continue
            if parts in files or parts in dirs:
                raise BadArchive(f"refusing {m.name[:80]!r}: it appears twice in the upload")
            files[parts] = m
            if len(files) > max_files:
                raise TooMany(f"the submission has more than {max_files} files, this course's limit")
            total += m.size
            if total > limit_bytes:
                raise TooLarge(f"the submission is larger than this course's limit of {human_size(limit_bytes)}")
            members.append((parts, m))
    except (tarfile.TarError, EOFError, OSError, UnicodeError) as exc:
        raise BadArchive(f"the upload is not a readable tar.gz archive ({exc})")
    return members, sorted(dirs, key=len), total


def unpack(data, parent, name, limit_bytes, max_files=1000):
    """Extract a tar.gz of plain files into the new folder ``name`` of the open folder ``parent``
    (a :class:`fsafe.Dir`); refuse links, odd names, conflicts, more than ``max_files`` files and
    more than ``limit_bytes``. On any refusal nothing is left behind. Returns the size."""
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BadArchive(f"the upload is not a tar.gz archive ({exc})")
    with tar:
        members, dirs, total = check_members(tar, limit_bytes, max_files)
        dest = parent.mkdir(name, 0o700, exist_ok=False)
        try:
            with dest:
                for parts in dirs:
                    dest.makedirs(parts).close()
                for parts, m in members:
                    folder = dest.makedirs(parts[:-1])
                    with folder, folder.create(parts[-1], 0o600) as out, tar.extractfile(m) as src:
                        while chunk := src.read(fsafe.CHUNK):
                            out.write(chunk)
        except BaseException as exc:
            parent.remove(name)
            if isinstance(exc, (tarfile.TarError, EOFError, zlib.error)):
                raise BadArchive(f"the upload is not a readable tar.gz archive ({exc})") from None
            if isinstance(exc, OSError) and exc.errno in (
                errno.EEXIST,
                errno.ENOTDIR,
                errno.EISDIR,
                errno.ENAMETOOLONG,
            ):
                raise BadArchive(f"the upload's names cannot be stored ({exc.strerror})") from None
            raise
    return total


def read_folder(folder, pattern="*", trusted=None):
    """``{name: bytes}`` of the plain files directly in ``folder`` whose names match ``pattern`` ({} when none)."""
    from fnmatch import fnmatch

    try:
        d = fsafe.open_dir(folder, trusted)
    except (FileNotFoundError, fsafe.UnsafePath):
        return {}
    out = {}
    with d:
        for name, st in d.entries():
            if stat.S_ISREG(st.st_mode) and fnmatch(name, pattern):
                try:
                    out[name] = d.read(name)
                except (fsafe.UnsafePath, FileNotFoundError):
                    continue
    return out


def read_text(path, trusted=None, limit=64 * 1024):
    """The text of the plain file ``path`` (never through a link), or None when there is none."""
    path = Path(path)
    try:
        with fsafe.opened(path.parent, trusted) as d:
            return d.read(path.name, limit).decode(errors="replace")
    except (FileNotFoundError, fsafe.UnsafePath):
        return None


def md5(data):
    return hashlib.md5(data).hexdigest()


def human_size(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
