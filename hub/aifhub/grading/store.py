"""Files in and out of the exchange: tar.gz archives checked on the way in, and the folders they land in."""

import hashlib
import io
import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath


class TooLarge(ValueError):
    """A submission over the course's size limit."""


class BadArchive(ValueError):
    """An upload that is not a plain tar.gz of files and folders."""


def pack(folder, skip=(".ipynb_checkpoints", "__pycache__")):
    """A tar.gz (bytes) of the files under ``folder``, with names relative to it."""
    folder = Path(folder)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if any(part in skip for part in rel.parts) or not path.is_file() or path.is_symlink():
                continue
            tar.add(path, arcname=rel.as_posix(), recursive=False)
    return buf.getvalue()


def unpack(data, dest, limit_bytes):
    """Extract a tar.gz of plain files into ``dest`` (new); refuse links, odd names and more than ``limit_bytes``."""
    dest = Path(dest)
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BadArchive(f"the upload is not a tar.gz archive ({exc})")
    total = 0
    with tar:
        members = []
        try:
            for m in tar:
                name = PurePosixPath(m.name)
                if name.is_absolute() or ".." in name.parts or not name.parts:
                    raise BadArchive(f"refusing the path {m.name!r} in the upload")
                if not (m.isfile() or m.isdir()):
                    raise BadArchive(f"refusing {m.name!r}: only plain files and folders may be handed in")
                total += m.size
                if total > limit_bytes:
                    raise TooLarge(f"the submission is larger than this course's limit of {human_size(limit_bytes)}")
                members.append(m)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise BadArchive(f"the upload is not a readable tar.gz archive ({exc})")
        dest.mkdir(mode=0o700, parents=True)
        for m in members:
            target = dest / m.name
            if m.isdir():
                target.mkdir(mode=0o700, parents=True, exist_ok=True)
                continue
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            src = tar.extractfile(m)
            with open(target, "wb") as f:
                shutil.copyfileobj(src, f)
            os.chmod(target, 0o600)
    return total


def read_folder(folder, pattern="*"):
    """``{name: bytes}`` of the plain files directly in ``folder``."""
    folder = Path(folder)
    return {p.name: p.read_bytes() for p in sorted(folder.glob(pattern)) if p.is_file()}


def md5(data):
    return hashlib.md5(data).hexdigest()


def human_size(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
