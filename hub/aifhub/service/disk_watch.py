"""What learners' work folders may hold on the machine's disk (local sandboxes).

No per-user filesystem quota is assumed to exist, so the service measures: every ``interval`` it sums
what each running sandbox's home holds (without following links). Over the course's ``sandbox.disk``
(else ``DiskWatch.default_disk``), the learner is warned on their pages; still over ``grace`` later, the
sandbox stops (the learner may start it again to delete files, and is stopped again while it holds too
much). When the state filesystem has less than ``reserve`` free, no sandbox starts and the sandbox
holding the most is stopped, so that one learner cannot fill the disk the hub's database lives on.
"""

import asyncio
import logging
import os
import stat
import time
from pathlib import Path

from traitlets import Float, Integer, Unicode, validate
from traitlets.config import LoggingConfigurable

from sqlalchemy import select

from ..catalog.model import parse_memory
from ..errors import Refusal
from ..isolation.homes import home_folder_name
from ..ledger.models import SandboxSession

log = logging.getLogger(__name__)


def folder_bytes(path, limit=200_000):
    """Bytes that ``path`` holds on disk (allocated blocks), links not followed; at most ``limit`` entries."""
    total, seen, stack = 0, 0, [str(path)]
    while stack and seen < limit:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    seen += 1
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
        except OSError:
            continue
    return total


def running_homes(s, service_users):
    """``{(user, server): course id}`` of running learners' sandboxes (not the service's own sessions)."""
    q = select(SandboxSession.user, SandboxSession.server_name, SandboxSession.course_id).where(
        SandboxSession.state == "active", SandboxSession.user.not_in(service_users)
    )
    return {(u, srv): c for u, srv, c in s.execute(q)}


def human(n):
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1000


class DiskWatch(LoggingConfigurable):
    """Measures learners' homes and the state filesystem; warns, stops, refuses."""

    default_disk = Unicode(
        "20G", help="What a learner's home may hold when the course sets no sandbox.disk (e.g. 20G; empty: no limit)."
    ).tag(config=True)
    reserve = Unicode(
        "2G",
        help="Free space kept on the state filesystem: below it no sandbox starts, and the "
        "sandbox holding the most is stopped.",
    ).tag(config=True)
    grace = Float(
        120.0, help="Seconds a learner over the disk limit has to delete files before the sandbox stops."
    ).tag(config=True)
    interval = Float(30.0, help="Seconds between measurements.").tag(config=True)
    max_entries = Integer(200_000, help="Files and folders counted per home at most (a measurement stays cheap).").tag(
        config=True
    )

    @validate("default_disk", "reserve")
    def _validate_size(self, proposal):
        if proposal.value:
            try:
                parse_memory(proposal.value)
            except ValueError:
                raise ValueError(f"{proposal.trait.name}: {proposal.value!r} is not a size (expected e.g. 20G)")
        return proposal.value

    def __init__(self, db, courses, hub, state_dir, service_users=(), **kw):
        super().__init__(**kw)
        self.db, self.courses, self.hub = db, courses, hub
        self.state_dir = Path(state_dir)
        self.work_root = self.state_dir / "work"
        self.service_users = tuple(service_users)
        self.over = {}  # (user, server) -> first seen over the limit (monotonic)
        self.notices = {}  # user -> message
        self.full = False

    def limit_of(self, course):
        text = (course.sandbox.disk if course is not None else None) or self.default_disk
        return parse_memory(text) if text else None

    def free_bytes(self):
        st = os.statvfs(self.state_dir)
        return st.f_bavail * st.f_frsize

    def check_room(self):
        """Raise a Refusal when the state filesystem is too full for another sandbox."""
        if self.full:
            raise Refusal(
                "disk-full",
                "The machine's disk is nearly full, so no sandbox can start now. "
                "An administrator has been told; try again later.",
            )

    async def run(self):
        while True:
            try:
                await self.step()
            except Exception:
                log.exception("disk watch failed")
            await asyncio.sleep(self.interval)

    async def step(self):
        running = await self.db.run(running_homes, self.service_users)
        homes = {}
        for (user, server), course_id in running.items():
            home = self.work_root / home_folder_name(user)  # the spawner's folder, hashed for some names
            if user not in homes:
                homes[user] = await asyncio.to_thread(folder_bytes, home, self.max_entries)
            course = self.courses.catalog.get(course_id)
            limit = self.limit_of(course)
            key = (user, server)
            if limit is None or homes[user] <= limit:
                self.over.pop(key, None)
                self.notices.pop(user, None)
                continue
            title = course.title if course else course_id
            first = self.over.setdefault(key, time.monotonic())
            if time.monotonic() - first < self.grace:
                self.notices[user] = (
                    f"Your work folder holds {human(homes[user])}, more than the {human(limit)} "
                    f"{title} allows: delete files, or your sandbox stops in about "
                    f"{max(1, round((self.grace - (time.monotonic() - first)) / 60))} min."
                )
            else:
                log.warning(
                    "Stopping %s's sandbox: the work folder holds %s (limit %s)", user, human(homes[user]), human(limit)
                )
                self.notices[user] = (
                    f"Your sandbox for {title} was stopped: your work folder held {human(homes[user])}, "
                    f"more than the {human(limit)} allowed. Start it again and delete files."
                )
                self.over.pop(key, None)
                await self.hub.stop_server(user, server)
        reserve = parse_memory(self.reserve) if self.reserve else 0
        free = await asyncio.to_thread(self.free_bytes)
        was_full, self.full = self.full, free < reserve
        if self.full:
            log.error(
                "The state filesystem has %s free, less than the reserve of %s: no sandbox starts",
                human(free),
                human(reserve),
            )
            biggest = max(((size, user) for user, size in homes.items()), default=None)
            if biggest is not None:
                for user, server in [k for k in running if k[0] == biggest[1]]:
                    log.warning(
                        "Stopping %s's sandbox: it holds the most (%s) of a nearly full disk", user, human(biggest[0])
                    )
                    self.notices[user] = (
                        f"Your sandbox was stopped: the machine's disk is nearly full and your work "
                        f"folder holds {human(biggest[0])}. Delete files when you start again."
                    )
                    await self.hub.stop_server(user, server)
        elif was_full:
            log.info("The state filesystem has room again (%s free)", human(free))
