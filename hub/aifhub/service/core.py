"""The service's core: the parts that know and decide, over one database and one hub client (wired by
:mod:`.wiring`, the composition root).

* :mod:`.catalog_watch`: the course catalog, reloaded when course files change;
* :mod:`.membership`: who is in a course (access, enrolment, rosters, the hub's groups);
* :mod:`.admission`: admitting sandboxes and GPU grading jobs, and the offers that predict it;
* :mod:`.metering_loop`: charging, warning and stopping against the hub's list of running servers.

Handlers and loops reach them through :class:`ServiceCore`; none holds HTTP code, and every database
access is a unit of work on :meth:`aifhub.state.db.Database.run`.
"""

import logging

from ..ledger import allocations
from ..errors import Refusal
from ..ledger.models import Allocation
from . import admission, metering_loop
from .membership import USERNAME
from .queue_status import QueueBoard
from .sandbox_events import KINDS, EventBoard

log = logging.getLogger(__name__)


def _learner_view(s, catalog, user, admin, inventory, stopped_limit, waitlist=False):
    """What a learner's home page and ``/api/v1/me`` show, read in one transaction."""
    return {
        "courses": admission.offers(s, catalog, user, admin, inventory, waitlist),
        "notice": metering_loop.notices(s, catalog, user).get(user),
        "stopped": metering_loop.stopped_sessions(s, user, stopped_limit),
        "running": metering_loop.running_courses(s, user),
    }


def _seed_allocations(s, specs):
    made = []
    for spec in specs:
        if s.get(Allocation, spec["id"]) is None:
            allocations.create(
                s,
                spec["id"],
                spec["gpu_hours"],
                spec.get("start"),
                spec.get("end"),
                title=spec.get("title", ""),
                access_call=spec.get("access_call", ""),
                owner=spec.get("owner", ""),
            )
            made.append(spec)
    return made


class ServiceCore:
    """The catalog watch, membership, admission and the metering loop of one service."""

    def __init__(self, db, hub, courses, membership, admission, metering, waitlist=None, events=None, slurm=None):
        self.db = db
        self.slurm = slurm  # Slurm's associations kept in step (sandboxes on Slurm: slurm_accounts.py), or None
        self.hub = hub
        self.courses = courses
        self.membership = membership
        self.waitlist = waitlist  # the local pool's GPU waitlist (the cluster's scheduler queues pods itself)
        self.admission = admission
        self.metering = metering
        self.events = events if events is not None else EventBoard()  # what learners must be told of their sandboxes
        self.queue = QueueBoard()  # where Slurm sandboxes wait in the scheduler's queue (queue_status.py)

    @property
    def catalog(self):
        return self.courses.catalog

    @property
    def images_dir(self):
        return self.courses.images_dir

    def broken_courses(self):
        return self.courses.broken_courses()

    async def watch_catalog(self, force=False):
        """Reload the course files when they changed and bring the hub's groups up to date; True when changed."""
        changed = await self.courses.watch(force)
        if changed or force:
            await self.membership.sync_groups()
            self.ledger_changed()
        return changed

    def ledger_changed(self):
        """Allocations, courses or enrolments changed: what follows them outside the ledger catches up (Slurm's
        associations, when sandboxes run there)."""
        if self.slurm is not None:
            self.slurm.changed()

    async def learner_view(self, user, admin, stopped_limit=5):
        """Offers, the quota notice (or what happened in their sandbox), recently stopped and running sandboxes
        of ``user``, read at once."""
        view = await self.db.run(
            _learner_view, self.catalog, user, admin, self.admission.inventory, stopped_limit, self.waitlist is not None
        )
        gpu_use = self.metering.gpu_use
        view["gpu"] = gpu_use.for_user(user) if gpu_use is not None else {}  # {course: its GPU's use now}
        disk = self.admission.disk.notices if self.admission.disk is not None else {}
        view["notice"] = self.events.notices(user).get(user) or disk.get(user) or view["notice"]
        line = await self.waitlist.of_user(user) if self.waitlist is not None else {}
        for offer in view["courses"]:  # while waiting for a GPU: the place in line and the estimate
            entry = line.get(offer["id"])
            offer["waitlist"] = (
                None
                if entry is None
                else {"position": entry["position"], "estimate_s": entry["estimate_s"], "state": entry["state"]}
            )
        queued = self.queue.of(user)
        for offer in view["courses"]:  # a Slurm job pending: the scheduler's reason in words, its expected start
            offer["queue"] = queued.get(offer["id"])
        return view

    async def notices(self):
        """``{user: message}`` for the hub's pages: quota warnings, and what happened in sandboxes."""
        disk = self.admission.disk.notices if self.admission.disk is not None else {}
        return await self.metering.notices() | disk | self.events.notices()

    def sandbox_event(self, user, course_id, kind):
        """Record what the spawner saw happen in ``user``'s sandbox; returns the learner's message."""
        course = self.catalog.get(course_id)
        if course is None or kind not in KINDS or not USERNAME.match(user or ""):
            raise Refusal("bad-event", f"Expected a user, a course and a kind of {', '.join(KINDS)}.")
        message = self.events.add(user, kind, course)
        log.info("Told %s: %s", user, message)
        return message

    async def seed_allocations(self, specs):
        """Create the allocations in ``specs`` that do not exist yet (the demo's)."""
        for spec in await self.db.run(_seed_allocations, specs):
            log.info("Seeded allocation %s (%s GPU-hours)", spec["id"], spec["gpu_hours"])
