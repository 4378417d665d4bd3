"""Files an instructor hands out during a session (the solution after an exercise), and a learner's reset of a
notebook to the course's version.

The service may run as root and the work folders are the learners': every step goes through :mod:`aifhub.fsafe`
(folders entered one name at a time without following links; files created fresh and renamed into place, owned
by the learner's uid). A learner's own file is never overwritten: a pushed file whose name the learner already
uses goes beside it as ``<stem>.from-instructor<suffix>``; a reset keeps the learner's copy as
``<stem>.backup-<time><suffix>``.
"""

import errno
import logging
import stat
from datetime import datetime, timezone
from pathlib import PurePosixPath

from .. import fsafe
from ..catalog.materials import is_private
from ..errors import Refusal
from ..hubside.local import home_folder_name

log = logging.getLogger(__name__)
MAX_BYTES = 20 * 1024 * 1024
NAME = "a file name of up to 200 characters: letters, digits, '.', '-', '_', ' ' (no folder, not hidden)"


def check_file_name(name):
    """A name a pushed file may have (one level, not hidden); a 400 otherwise."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 200
        or name.startswith(".")
        or not all(ch.isalnum() or ch in "._- " for ch in name)
    ):
        raise Refusal("bad-field", f"'name' must be {NAME}.")
    return name


def check_course_path(rel):
    """A path inside the course folder that learners get (``01-intro.ipynb``, ``data/x.csv``); a 400 otherwise."""
    if not isinstance(rel, str) or not rel:
        raise Refusal("bad-field", "'path' must name a file of the course, e.g. '01-intro.ipynb'.")
    parts = PurePosixPath(rel).parts
    if rel.startswith("/") or any(p in ("..", ".") for p in parts) or is_private(rel):
        raise Refusal("bad-field", f"'{rel}' is not one of the course's materials.")
    return list(parts)


def beside(name, tag):
    p = PurePosixPath(name)
    return f"{p.stem}.{tag}{p.suffix}"


def _open_below(top, parts):
    """Open the folders ``parts`` below the open folder ``top`` (without following links)."""
    d = top
    opened = []
    try:
        for part in parts:
            d = d.sub(part)
            opened.append(d)
    except BaseException:
        for o in opened:
            o.close()
        raise
    return d, opened


def put_file(d, name, data, uid):
    """Put ``data`` as ``name`` in the open folder ``d`` without overwriting the learner's file. Returns what
    happened: ``added``, ``same`` (they have it), or ``beside:<name>`` (theirs kept, ours next to it)."""
    st = d.lstat(name)
    if st is None:
        d.write(name, data, 0o600, uid, uid)
        return "added"
    if stat.S_ISREG(st.st_mode):
        try:
            if d.read(name, len(data)) == data:
                return "same"
        except fsafe.UnsafePath:
            pass
    alt = beside(name, "from-instructor")
    d.write(alt, data, 0o600, uid, uid)  # renamed over a previous push of ours; a link there is replaced, not followed
    return f"beside:{alt}"


def push(work_root, course_id, learners, name, data):
    """Push ``data`` as ``name`` into each learner's course folder (``learners``: ``{user: uid or None}``).
    Returns ``{user: what happened}``; a learner without a work folder yet gets ``no-folder`` (their first start
    seeds it from the course)."""
    out = {}
    for user, uid in sorted(learners.items()):
        folder = f"{work_root}/{home_folder_name(user)}/{course_id}"
        try:
            with fsafe.opened(folder, trusted=work_root) as d:
                out[user] = put_file(d, name, data, uid)
        except FileNotFoundError:
            out[user] = "no-folder"
        except (fsafe.UnsafePath, OSError) as exc:
            log.warning("Pushing %s to %s's folder of %s: %s", name, user, course_id, exc)
            out[user] = "refused: the folder or the name is not a plain one"
    return out


def reset(work_root, course_path, course_id, user, uid, rel, now=None):
    """Replace the learner's ``rel`` with the course's version; their copy is kept beside it as a backup.
    Returns ``{"path", "backup"}`` (backup None when they had no such file)."""
    parts = check_course_path(rel)
    try:
        with fsafe.opened(course_path) as course:
            src, opened = _open_below(course, parts[:-1])
            try:
                data = src.read(parts[-1], MAX_BYTES)
            finally:
                for o in opened:
                    o.close()
    except (FileNotFoundError, fsafe.UnsafePath) as exc:
        raise Refusal("no-material", f"The course has no file '{rel}'.") from exc
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    folder = f"{work_root}/{home_folder_name(user)}/{course_id}"
    try:
        with fsafe.opened(folder, trusted=work_root) as top:
            d, opened = _open_below(top, parts[:-1])
            try:
                name, backup = parts[-1], None
                st = d.lstat(name)
                if st is not None:
                    backup = beside(name, f"backup-{stamp}")
                    d.rename(name, backup)  # whatever it is (a link too) is moved, never followed
                d.write(name, data, 0o600, uid, uid)
            finally:
                for o in opened:
                    o.close()
    except FileNotFoundError as exc:
        raise Refusal(
            "no-work-folder", "Start the course's sandbox once first: your work folder is made then."
        ) from exc
    except fsafe.UnsafePath as exc:
        raise Refusal("bad-field", f"'{rel}' in your folder passes through a link or a file; not followed.") from exc
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise Refusal("bad-field", "That name is too long.") from exc
        raise
    return {"path": rel, "backup": "/".join([*parts[:-1], backup]) if backup else None}
