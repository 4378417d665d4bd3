"""Can a learner's uid reach what its sandbox needs? (the Python environment, its work folder)

As root, sandboxes run under learners' own uids, which own none of the machine's folders: a
checkout in a 0700 home folder makes every spawn fail with "Permission denied". These checks
read the permission bits (not ACLs) of every folder on the way, following links, and name the
first one that stops the learner and what to do about it.
"""

import os
import stat
import sysconfig
from dataclasses import dataclass
from pathlib import Path

PROBE_UID = 200000  # a learner's uid: owns nothing outside the work folders, in no group


@dataclass(frozen=True)
class Blocked:
    path: str  # the folder or file that stops the learner
    needed: str  # "enter", "read", "run"
    mode: int
    target: str  # what the learner was trying to reach

    def message(self, what):
        owner = "root's" if os.stat(self.path).st_uid == 0 else "another user's"
        fix = (
            f"chmod o+x {self.path}"
            if self.needed == "enter"
            else f"chmod o+r {self.path}"
            if self.needed == "read"
            else f"chmod o+rx {self.path}"
        )
        return (
            f"Learners' sandboxes run under their own uids and cannot {self.needed} {self.path} "
            f"(mode {stat.S_IMODE(self.mode):04o}, {owner}), so they cannot reach {what} {self.target}: "
            f"every spawn would fail with 'Permission denied'. Either put aifhub (and its state) where every "
            f"user can read it, e.g. a clone in /opt/aifhub with `make run` there, or let others through: {fix}."
        )


def _allows(st, uid, gids, bits):
    """Whether ``uid`` (in ``gids``) has all of ``bits`` (4 read, 2 write, 1 exec) on ``st``."""
    if st.st_uid == uid:
        mode = (st.st_mode >> 6) & 7
    elif st.st_gid in gids:
        mode = (st.st_mode >> 3) & 7
    else:
        mode = st.st_mode & 7
    return mode & bits == bits


def _folders(path):
    """Every folder traversed to reach ``path``, as written and with links resolved."""
    path = Path(os.path.abspath(path))
    seen = []
    for candidate in (path, Path(os.path.realpath(path))):
        for parent in reversed(candidate.parents):
            if parent not in seen:
                seen.append(parent)
    return seen


def blocked(path, needed="run", uid=PROBE_UID, gids=()):
    """The first obstacle between ``uid`` and ``path`` (None when it gets through).

    ``needed``: "run" (a program: read and execute), "read" (a file), "enter" (a folder: list and enter),
    "pass" (a folder to go through, unlisted).
    """
    gids = set(gids)
    for folder in _folders(path):
        try:
            st = os.stat(folder)
        except OSError:
            continue  # a missing folder is another problem, found elsewhere
        if not _allows(st, uid, gids, 1):
            return Blocked(str(folder), "enter", st.st_mode, str(path))
    try:
        st = os.stat(path)
    except OSError:
        return None
    bits = {"run": 5, "read": 4, "enter": 5, "pass": 1}[needed]
    if not _allows(st, uid, gids, bits):
        return Blocked(str(path), "enter" if needed == "pass" else needed, st.st_mode, str(path))
    return None


def interpreter(script):
    """The program named on a script's ``#!`` line, or None."""
    try:
        with open(script, "rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    parts = first[2:].decode(errors="replace").split()
    return parts[0] if parts else None


def sandbox_obstacles(command, work_root, uid=PROBE_UID):
    """``[(what, Blocked)]``: what a sandbox running ``command`` (its first word) with its work folder in
    ``work_root`` could not reach."""
    program = command[0]
    checks = [("the single-user server", program, "run")]
    shebang = interpreter(program)
    if shebang:
        checks.append(("its Python", shebang, "run"))
    checks.append(("the Python packages in", sysconfig.get_paths()["purelib"], "enter"))
    checks.append(("the learners' work folders in", str(work_root), "pass"))
    found = []
    for what, path, needed in checks:
        obstacle = blocked(path, needed, uid)
        if obstacle is not None and all(obstacle.path != b.path for _w, b in found):
            found.append((what, obstacle))
    return found
