"""The uid and gid ranges of one installation, claimed machine-wide so that two never share them.

An installation hands out three ranges of ids: learners' sandbox uids (``AifhubService.first_uid``), graded
kernels' uids (``GradingManager.first_uid``, ``uid_count`` of them) and courses' gids
(``GradingManager.first_course_gid``). Learners and graded kernels run with their uid as their gid too, so all
three are ids of one space. Two installations on one machine with the same ranges give learners of both the
same uid (each reaches the other's files), and a grading job's clean-up, which kills every process of its
grading uid, ends the other's graded kernel.

``aifhub up`` claims its ranges before it starts anything: one lock file per block of :data:`BLOCK` ids that a
range touches, under :func:`lock_dir` (``/run/aifhub/ranges`` as root), each held with ``flock`` for as long as
``aifhub up`` and its hub run, and naming its owner (pid and state directory). The kernel drops a lock when its
last holder exits, so a stale file of a dead process blocks nothing; a held one is a clash, refused with the
owner and the options that pick other ranges. Threat model: the lock directory is root's (0755) when run as
root; an unprivileged installation runs no process under other ids, and locks in a folder of its own.
"""

import fcntl
import json
import os
import re
import shlex
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

BLOCK = 10000  # ids per lock file
LEARNER_FIRST = 200000
GRADING_FIRST = 300000
GRADING_COUNT = 10000
COURSE_GID_FIRST = 400000
LEARNER_SPAN = 10000  # learners' uids a range claims (the 10000 first learners of an installation)
COURSE_SPAN = 10000

OPTION = re.compile(r"^--(AifhubService|GradingManager)\.(first_uid|uid_count|first_course_gid)(?:=(.*))?$")


class RangeClash(Exception):
    """Another running installation holds one of our ranges (the message says whose and what to do)."""


@dataclass(frozen=True)
class IdRange:
    what: str  # in words
    option: str  # the option that moves it
    first: int
    count: int

    @property
    def blocks(self):
        return range(self.first // BLOCK, (self.first + max(self.count, 1) - 1) // BLOCK + 1)

    def __str__(self):
        return f"{self.what} {self.first}-{self.first + self.count - 1}"


def service_options(args):
    """``{(class, trait): int}`` of the id options among the service's arguments (``AIFHUB_SERVICE_ARGS``)."""
    words, found = shlex.split(args or ""), {}
    for i, word in enumerate(words):
        m = OPTION.match(word)
        if not m:
            continue
        value = m.group(3) if m.group(3) is not None else (words[i + 1] if i + 1 < len(words) else "")
        try:
            found[(m.group(1), m.group(2))] = int(value)
        except ValueError:
            raise ValueError(f"--{m.group(1)}.{m.group(2)} must be a whole number, got {value!r}")
    return found


def configured(args):
    """The three ranges an installation started with the service arguments ``args`` uses."""
    opts = service_options(args)
    grading_count = opts.get(("GradingManager", "uid_count"), GRADING_COUNT)
    return [
        IdRange(
            "learners' uids",
            "--AifhubService.first_uid",
            opts.get(("AifhubService", "first_uid"), LEARNER_FIRST),
            LEARNER_SPAN,
        ),
        IdRange(
            "graded kernels' uids",
            "--GradingManager.first_uid",
            opts.get(("GradingManager", "first_uid"), GRADING_FIRST),
            grading_count,
        ),
        IdRange(
            "courses' gids",
            "--GradingManager.first_course_gid",
            opts.get(("GradingManager", "first_course_gid"), COURSE_GID_FIRST),
            COURSE_SPAN,
        ),
    ]


def lock_dir():
    """Where the locks live: ``$AIFHUB_RANGE_LOCK_DIR``, else ``/run/aifhub/ranges`` as root, else a folder of
    this user's (an unprivileged hub runs nothing under other ids: its locks only keep its own runs apart)."""
    if os.environ.get("AIFHUB_RANGE_LOCK_DIR"):
        return Path(os.environ["AIFHUB_RANGE_LOCK_DIR"])
    if os.geteuid() == 0:
        return Path("/run/aifhub/ranges")
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"aifhub-ranges-{os.geteuid()}"


def _open_dir(path):
    path.mkdir(mode=0o755 if os.geteuid() == 0 else 0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        raise RangeClash(
            f"the lock folder {path} is not this user's alone (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}); "
            "remove it or set AIFHUB_RANGE_LOCK_DIR to a folder of your own"
        )
    return fd


def _owner(fd):
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096) or b"{}")
    except (OSError, ValueError):
        return {}


class RangeLocks:
    """The locks of one installation's ranges; :meth:`fds` to hand them to the hub's process too."""

    def __init__(self, state_dir, ranges, directory=None):
        self.state_dir, self.ranges = str(state_dir), list(ranges)
        self.directory = Path(directory) if directory else lock_dir()
        self._fds = []

    def fds(self):
        return list(self._fds)

    def claim(self):
        """Lock every block of every range, or none: raises :class:`RangeClash` naming the owners."""
        blocks = sorted({b for r in self.ranges for b in r.blocks})
        clashes = []  # (block, owner)
        dfd = _open_dir(self.directory)
        try:
            for block in blocks:
                fd = os.open(
                    f"ids-{block * BLOCK}.lock",
                    os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o644,
                    dir_fd=dfd,
                )
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    clashes.append((block, _owner(fd)))
                    os.close(fd)
                    continue
                self._fds.append(fd)
                record = {"pid": os.getpid(), "state_dir": self.state_dir, "ids": [str(r) for r in self.ranges]}
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(record).encode(), 0)
        finally:
            os.close(dfd)
        if clashes:
            self.release()
            raise RangeClash(self._clash_message(clashes))
        return self

    def _clash_message(self, clashes):
        ours = [r for r in self.ranges if any(block in r.blocks for block, _ in clashes)]
        owners = {}
        for _, owner in clashes:
            owners.setdefault(owner.get("state_dir"), owner)
        who = "; ".join(
            f"the aifhub with the state directory {o['state_dir']} (pid {o.get('pid')}), which uses "
            + ", ".join(o.get("ids") or [])
            if state
            else "another aifhub on this machine"
            for state, o in owners.items()
        )
        options = " ".join(f"{r.option}=<first id>" for r in ours)
        return (
            f"{', '.join(map(str, ours))}: in use by {who}. Two installations on one machine with the same ids "
            "would share learners' uids, and one's grading clean-up would kill the other's kernels. Stop that one, "
            f'or give this one ranges of its own, e.g. AIFHUB_SERVICE_ARGS="{options}" (ranges of {BLOCK} ids '
            "that no other installation uses; see docs/embedded.md, 'Two installations on one machine')"
        )

    def release(self):
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []
