"""The service's composition root: the parts that know and decide, wired over one database and one hub client.

* :mod:`.catalog_watch`: the course catalog, reloaded when course files change;
* :mod:`.membership`: who is in a course (access, enrolment, rosters, the hub's groups);
* :mod:`.admission`: admitting sandboxes and GPU grading jobs, and the offers that predict it;
* :mod:`.metering_loop`: charging, warning and stopping against the hub's list of running servers.

Handlers and loops reach them through :class:`ServiceCore`; none holds HTTP code, and every database
access is a unit of work on :meth:`aifhub.state.db.Database.run`.
"""

import logging

from ..ledger import allocations
from ..ledger.models import Allocation
from . import admission, metering_loop
from .admission import Admission
from .catalog_watch import CatalogWatch
from .membership import Membership
from .metering_loop import MeteringLoop

log = logging.getLogger(__name__)


def _learner_view(s, catalog, user, admin, inventory, stopped_limit):
    """What a learner's home page and ``/api/v1/me`` show, read in one transaction."""
    return {
        "courses": admission.offers(s, catalog, user, admin, inventory),
        "notice": metering_loop.notices(s, catalog, user).get(user),
        "stopped": metering_loop.stopped_sessions(s, user, stopped_limit),
        "running": metering_loop.running_courses(s, user),
    }


def _seed_allocations(s, specs):
    made = []
    for spec in specs:
        if s.get(Allocation, spec["id"]) is None:
            allocations.create(s, spec["id"], spec["gpu_hours"], spec.get("start"), spec.get("end"),
                               title=spec.get("title", ""), access_call=spec.get("access_call", ""),
                               owner=spec.get("owner", ""))
            made.append(spec)
    return made


class ServiceCore:
    """The catalog watch, membership, admission and the metering loop of one service."""

    def __init__(self, db, course_dirs, images_dir, inventory, first_uid, hub=None,
                 default_session_s=4 * 3600, stop_grace_s=120, settle_grace_s=10, protect_sources=False):
        self.db = db
        self.hub = hub
        self.courses = CatalogWatch(course_dirs, images_dir, protect_sources=protect_sources)
        self.membership = Membership(db, self.courses, hub)
        self.admission = Admission(db, self.courses, self.membership, inventory, first_uid, default_session_s)
        self.metering = MeteringLoop(db, self.courses, hub, self.admission, stop_grace_s, settle_grace_s)

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
        return changed

    async def learner_view(self, user, admin, stopped_limit=5):
        """Offers, the quota notice, recently stopped and running sandboxes of ``user``, read at once."""
        return await self.db.run(_learner_view, self.catalog, user, admin, self.admission.inventory, stopped_limit)

    async def seed_allocations(self, specs):
        """Create the allocations in ``specs`` that do not exist yet (the demo's)."""
        for spec in await self.db.run(_seed_allocations, specs):
            log.info("Seeded allocation %s (%s GPU-hours)", spec["id"], spec["gpu_hours"])
