"""What the service knows and decides: catalog, GPU pool, sessions and enrolments.

Handlers and loops call into :class:`ServiceCore`; it holds no HTTP code. Every database access is a
unit of work (a function of a session, below the class's methods' level) handed to
:meth:`aifhub.state.db.Database.run`, so nothing here blocks the event loop.
"""

import asyncio
import logging
import os
import re
import stat
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select

from .. import fsafe
from ..auth.grants import apply_staff
from ..catalog import load_catalog, load_images
from ..catalog.access import decide_access
from ..catalog.loader import fingerprint
from ..ledger import allocations, metering, sandboxes
from ..ledger.limits import limits_for
from ..ledger.models import Allocation, Enrollment, SandboxSession, utcnow

log = logging.getLogger(__name__)
GRADER = "aifhub-grader"  # the ledger's user for GPU time spent grading a course's submissions
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,254}$")


def course_today(course, now=None):
    tz = ZoneInfo(course.schedule.timezone if course.schedule else "UTC")
    return (now or datetime.now(tz)).astimezone(tz).date()


def learner_group(course_id):
    return f"nbgrader-{course_id}"


def instructor_group(course_id):
    return f"formgrade-{course_id}"


# -- units of work (each runs in one transaction on the database's thread) ----

def _enrolled_courses(s, user):
    return set(s.scalars(select(Enrollment.course_id).where(Enrollment.user == user)))


def _enrolments(s, course_id=None):
    q = select(Enrollment.course_id, Enrollment.user, Enrollment.source)
    if course_id is not None:
        q = q.where(Enrollment.course_id == course_id)
    return list(s.execute(q))


def _enrol(s, user, course_id, source):
    """Record an enrolment; False when it existed already."""
    if sandboxes.is_enrolled(s, user, course_id):
        return False
    s.add(Enrollment(user=user, course_id=course_id, source=source))
    return True


def _notices(s, catalog, user=None):
    out = {}
    q = select(SandboxSession).where(SandboxSession.state == "active", SandboxSession.warned_percent > 0)
    if user:
        q = q.where(SandboxSession.user == user)
    for session in s.scalars(q):
        course = catalog.get(session.course_id)
        if course is None:
            continue
        tightest = max(limits_for(s, course, session.user, utcnow()), key=lambda lim: lim.percent, default=None)
        if tightest is None:
            continue
        unit = "GPU" if tightest.unit == "gpu" else "CPU"
        out[session.user] = (f"You have used {tightest.percent:.0f}% of your {unit}-hours for {course.title}; "
                             "your sandbox stops when they run out.")
    return out


def _stopped_sessions(s, user, limit):
    q = (select(SandboxSession).where(SandboxSession.user == user, SandboxSession.stop_reason.is_not(None))
         .order_by(SandboxSession.id.desc()).limit(limit))
    return [{"course": x.course_id, "ended_at": x.ended_at.isoformat() if x.ended_at else None,
             "reason": x.stop_reason} for x in s.scalars(q)]


def _running_courses(s, user):
    q = select(SandboxSession.course_id, SandboxSession.server_name).where(
        SandboxSession.state == "active", SandboxSession.user == user)
    return {course_id: server for course_id, server in s.execute(q)}


def _pool_status(s, inventory):
    if inventory is None:
        return {"scheduler": "kubernetes", "devices": [], "kinds": []}
    taken = sandboxes.claimed_devices(s)
    kinds = {}
    for d in inventory:
        k = kinds.setdefault(d.kind, {"kind": d.kind, "total": 0, "free": 0})
        k["total"] += 1
        k["free"] += d.id not in taken
    return {"scheduler": "local", "devices": [d.to_dict() | {"busy": d.id in taken} for d in inventory],
            "kinds": list(kinds.values())}


def _offers(s, catalog, user, admin, inventory):
    """The courses ``user`` may see, each with whether it can start now and why not."""
    enrolled_in = _enrolled_courses(s, user)
    taken = sandboxes.claimed_devices(s) if inventory is not None else set()
    now = utcnow()
    offers = []
    for course in sorted(catalog.courses.values(), key=lambda c: c.title):
        enrolled = course.id in enrolled_in
        decision = decide_access(course, user, admin=admin, enrolled=enrolled, today=course_today(course))
        if not decision.allowed and decision.reason == "not-enrolled" and course.enrollment == "roster":
            continue  # roster courses are invisible to those not on them
        entry = course.summary() | {"access": decision.to_dict(),
                                    "enrolled": course.on_roster(user) or decision.role != "learner" or enrolled}
        free = None
        if course.sandbox.gpu is not None and inventory is not None:
            free = sum(1 for d in inventory if d.matches(course.sandbox.gpu.kind) and d.id not in taken)
        entry["gpu_free"] = free
        can_start, why = decision.allowed, decision.message
        if can_start and free is not None and free < course.sandbox.gpu.count:
            can_start, why = False, f"All GPUs of kind '{course.sandbox.gpu.kind}' are in use right now."
        if decision.allowed:
            limits = limits_for(s, course, user, now)
            entry["quota"] = [lim.to_dict() for lim in limits]
            draws = {"gpu": course.needs_gpu, "cpu": True}
            exhausted = next((lim for lim in limits if draws[lim.unit] and lim.remaining_ms <= 0), None)
            if can_start and exhausted:
                can_start, why = False, exhausted.refusal(course).message
        entry["can_start"], entry["why_not"] = can_start, why
        offers.append(entry)
    return offers


def _learner_view(s, catalog, user, admin, inventory, stopped_limit):
    """What a learner's home page and ``/api/v1/me`` show, read in one transaction."""
    return {
        "courses": _offers(s, catalog, user, admin, inventory),
        "notice": _notices(s, catalog, user).get(user),
        "stopped": _stopped_sessions(s, user, stopped_limit),
        "running": _running_courses(s, user),
    }


def _admit(s, course, user, server_name, inventory, first_uid, default_session_s, enrol_as):
    """Admission, and the enrolment an open course's learner gets with it, in one transaction."""
    admission = sandboxes.admit(s, course, user, server_name, inventory, first_uid, default_session_s=default_session_s)
    enrolled = _enrol(s, user, course.id, enrol_as) if enrol_as else False
    return admission, enrolled


def _admit_grading(s, course, server, inventory, first_uid, expected_s):
    return sandboxes.admit(s, course, GRADER, server, inventory, first_uid, default_session_s=expected_s,
                           learner_quota=False).devices


def _roster_add(s, course, names):
    added = []
    for name in dict.fromkeys(names):
        if name not in course.roster and _enrol(s, name, course.id, "roster"):
            added.append(name)
    return added


def _roster_remove(s, course, name):
    row = s.scalar(select(Enrollment).where(Enrollment.user == name, Enrollment.course_id == course.id))
    if row is None:
        raise sandboxes.Refusal(404, "not-on-roster", f"{name} is not on the roster of {course.title}.")
    s.delete(row)


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
    def __init__(self, db, course_dirs, images_dir, inventory, first_uid, hub=None,
                 default_session_s=4 * 3600, stop_grace_s=120, settle_grace_s=10, protect_sources=False):
        self.db = db
        self.course_dirs = list(course_dirs)
        self.images_dir = images_dir
        self.inventory = None if inventory is None else list(inventory)  # None: the cluster places GPUs
        self.first_uid = first_uid
        self.hub = hub
        self.default_session_s = default_session_s
        self.stop_grace_s = stop_grace_s
        self.settle_grace_s = settle_grace_s
        self.protect_sources = protect_sources
        self.refusals = {}  # reason -> count, for the metrics
        self.grading_running = set()  # (GRADER, server) of grading jobs holding GPUs: metered like servers
        self.catalog = None
        self._fingerprint = None
        self.staff = {}  # course id -> instructors granted by logins (aifhub.auth.grants.refresh_staff)
        self.reload_catalog()

    # -- catalog -------------------------------------------------------------

    def reload_catalog(self, force=True):
        """Reload course files; returns True when something changed. Reads files: off the loop, use
        :meth:`watch_catalog` there."""
        fp = fingerprint(self.course_dirs)
        if not force and fp == self._fingerprint:
            return False
        catalog = load_catalog(self.course_dirs, load_images(self.images_dir))
        for name, problems in catalog.broken.items():
            log.warning("Course %s is broken and unavailable:\n  %s", name, "\n  ".join(map(str, problems)))
        log.info("Catalog: %d course(s), %d broken", len(catalog.courses), len(catalog.broken))
        apply_staff(catalog, self.staff)  # instructors granted by logins
        if self.protect_sources:
            self._protect_sources(catalog)
        self._fingerprint, self.catalog = fp, catalog
        return True

    async def watch_catalog(self, force=False):
        """Reload the course files when they changed (in a thread) and bring the groups up to date."""
        changed = await asyncio.to_thread(self.reload_catalog, force)
        if changed:
            await self.sync_groups()
        return changed

    def _protect_sources(self, catalog):
        """Instructors' nbgrader sources (solutions, hidden tests) readable by the hub's user only.

        Learners' sandboxes and grading kernels run as other uids; the hub copies materials for them
        and the grading workers copy what they grade, so nothing of theirs needs to read ``source/``.
        """
        for course in catalog.courses.values():
            source = course.path / "source"
            try:
                with fsafe.opened(course.path) as folder:  # never through a link
                    st = folder.lstat("source")
                    if st is None or not stat.S_ISDIR(st.st_mode):
                        if st is not None:
                            log.warning("Left %s as it is: it is %s, not a folder", source, fsafe.kind(st.st_mode))
                        continue
                    if st.st_mode & 0o077:
                        with folder.sub("source") as d:
                            os.fchmod(d.fd, 0o700)
                        log.info("Made %s private to the hub's user (it holds solutions)", source)
            except OSError as exc:
                log.warning("Could not make %s private: %s", source, exc)

    async def desired_groups(self, course_id=None):
        """``{group: members}`` that rosters, enrolments and instructor lists call for."""
        enrolled = await self.db.run(_enrolments, course_id)
        groups = {}
        for course in self.catalog.courses.values():
            if course_id is None or course.id == course_id:
                groups[learner_group(course.id)] = set(course.roster)
                groups[instructor_group(course.id)] = set(course.instructors) | course.staff
        for cid, user, _source in enrolled:
            if learner_group(cid) in groups:
                groups[learner_group(cid)].add(user)
        return groups

    async def sync_learner_group(self, course_id):
        """Bring one course's ``nbgrader-<course>`` group up to date (after an enrolment or a roster edit)."""
        if self.hub is not None:
            group = learner_group(course_id)
            desired = await self.desired_groups(course_id)
            if group in desired:  # a course no longer in the catalog keeps its group as it was
                await self.hub.sync_group(group, desired[group])

    async def sync_course_groups(self, course_id):
        """Both groups of one course (after a login changed its learners or instructors)."""
        if self.hub is not None:
            desired = await self.desired_groups(course_id)
            for group in (learner_group(course_id), instructor_group(course_id)):
                if group in desired:
                    await self.hub.sync_group(group, desired[group])

    async def sync_groups(self):
        if self.hub is None:
            return
        for group, members in sorted((await self.desired_groups()).items()):
            await self.hub.sync_group(group, members)

    # -- access and offers ---------------------------------------------------

    async def access(self, course, user, admin):
        enrolled = await self.db.run(sandboxes.is_enrolled, user, course.id)
        return decide_access(course, user, admin=admin, enrolled=enrolled, today=course_today(course))

    async def pool_status(self):
        """Per GPU kind: devices in total and free right now."""
        return await self.db.run(_pool_status, self.inventory)

    async def offers(self, user, admin):
        """The courses ``user`` may see, each with whether it can start now and why not."""
        return await self.db.run(_offers, self.catalog, user, admin, self.inventory)

    async def learner_view(self, user, admin, stopped_limit=5):
        """Offers, the quota notice, recently stopped and running sandboxes of ``user``, read at once."""
        return await self.db.run(_learner_view, self.catalog, user, admin, self.inventory, stopped_limit)

    def broken_courses(self):
        return {name: [p.to_dict() for p in problems] for name, problems in sorted(self.catalog.broken.items())}

    # -- enrolment -----------------------------------------------------------

    async def enrol(self, course_id, user, code=None):
        course = self.catalog.get(course_id)
        if course is None:
            raise sandboxes.Refusal(404, "unknown-course", f"There is no course '{course_id}'.")
        if course.enrollment == "roster" and not course.on_roster(user):
            raise sandboxes.Refusal(403, "roster", f"{course.title} enrols from its roster; ask an instructor to add you.")
        if course.enrollment == "code" and code != course.enrollment_code:
            raise sandboxes.Refusal(403, "bad-code", f"That is not the enrolment code of {course.title}.")
        await self.db.run(_enrol, user, course_id, course.enrollment)
        await self.sync_learner_group(course_id)
        return course

    # -- admission -----------------------------------------------------------

    async def admit(self, user, server_name, course_id, admin):
        """Admit a spawn. Returns a JSON-ready dict; raises Refusal."""
        if not course_id:
            raise sandboxes.Refusal(400, "no-course", "Choose a course to start (send {\"course\": \"<id>\"}).")
        course = self.catalog.get(course_id)
        if course is None:
            if course_id in self.catalog.broken:
                raise sandboxes.Refusal(
                    409, "broken-course",
                    f"The course '{course_id}' has errors in its course file and cannot start; its instructors have been told.",
                )
            raise sandboxes.Refusal(404, "unknown-course", f"There is no course '{course_id}'.")
        decision = await self.access(course, user, admin)
        if not decision.allowed:
            raise sandboxes.Refusal(403, decision.reason, decision.message)
        enrol_as = "open" if course.enrollment == "open" and decision.role == "learner" else None
        try:
            admission, enrolled = await self.db.run(_admit, course, user, server_name, self.inventory, self.first_uid,
                                                    self.default_session_s, enrol_as)
        except sandboxes.Refusal as refusal:
            self.refusals[refusal.reason] = self.refusals.get(refusal.reason, 0) + 1
            raise
        if enrolled:
            try:
                await self.sync_learner_group(course.id)
            except Exception as exc:  # the spawn goes on; the next sync catches up
                log.warning("Group sync after enrolling %s in %s failed: %s", user, course.id, exc)
        return admission.to_dict() | {
            "course": course.summary(),
            "materials": str(course.path),
            "role": decision.role,
        }

    async def admit_grading(self, course_id, job_id, expected_s, cluster=False):
        """GPU time for grading one submission of a GPU course, charged to the course like a sandbox's.

        Returns the devices from the local pool (``[]`` when the course needs none, or when the cluster
        places the GPU, as for sandboxes or with ``cluster`` (grading Jobs): the Job asks for it, and the
        session is charged while the job runs);
        raises Refusal (409 ``gpu-busy`` when no local device is free now, 403 when the course's
        allocation or budget is used up).
        """
        course = self.catalog.get(course_id)
        if course is None or course.sandbox.gpu is None:
            return []
        server = f"grading-{job_id}"
        devices = await self.db.run(_admit_grading, course, server, None if cluster else self.inventory,
                                    self.first_uid, expected_s)
        self.grading_running.add((GRADER, server))
        return devices

    async def release_grading(self, job_id):
        server = f"grading-{job_id}"
        self.grading_running.discard((GRADER, server))
        await self.release(GRADER, server, "graded")

    async def release(self, user, server_name, reason):
        return await self.db.run(sandboxes.release, user, server_name, reason)

    async def meter(self):
        """One metering pass against the hub's list of running servers; stops what must stop."""
        asked_at = utcnow()
        running = await self.hub.running_servers() | self.grading_running
        result = await self.db.run(metering.tick, running, asked_at, self.catalog, grace_s=self.stop_grace_s,
                                   settle_grace_s=self.settle_grace_s)
        if result.settled:
            log.info("Settled %d session(s) whose servers stopped without telling us", len(result.settled))
        for user, _server, percent, message in result.warnings:
            log.info("Quota warning for %s (%d%%): %s", user, percent, message)
        for user, server_name, reason in result.stops:
            if (user, server_name) in self.grading_running:
                continue  # a grading job ends by itself, within its time limit
            log.warning("Stopping %s's sandbox: %s", user, reason)
            await self.hub.stop_server(user, server_name)
        return result

    # -- what a learner sees -------------------------------------------------

    async def quotas(self, course, user):
        return await self.db.run(lambda s: [lim.to_dict() for lim in limits_for(s, course, user, utcnow())])

    async def notices(self, user=None):
        """Warnings for learners whose running sandboxes near a limit: ``{user: message}``."""
        return await self.db.run(_notices, self.catalog, user)

    async def stopped_sessions(self, user, limit=5):
        return await self.db.run(_stopped_sessions, user, limit)

    async def running_courses(self, user):
        """``{course_id: server_name}`` of the learner's running sandboxes."""
        return await self.db.run(_running_courses, user)

    async def stop_own(self, user, course_id):
        """Stop the learner's sandbox for ``course_id`` (through the hub, which tells the spawner)."""
        server = (await self.running_courses(user)).get(course_id)
        if server is None:
            raise sandboxes.Refusal(404, "not-running", "That sandbox is not running.")
        await self.hub.stop_server(user, server)

    # -- rosters -------------------------------------------------------------

    async def roster(self, course):
        """Learners of a course: from course.yaml, added by instructors, or enrolled themselves."""
        members = {name: "course.yaml" for name in course.roster}
        for _course_id, user, source in await self.db.run(_enrolments, course.id):
            members.setdefault(user, {"roster": "added by an instructor"}.get(source, f"enrolled ({source})"))
        return dict(sorted(members.items()))

    async def roster_add(self, course, names):
        names = [n.strip() for n in names if n and n.strip()]
        bad = [n for n in names if not USERNAME.match(n)]
        if bad:
            raise sandboxes.Refusal(400, "bad-name", f"Not valid user names: {', '.join(bad[:5])}")
        added = await self.db.run(_roster_add, course, names)
        await self.sync_learner_group(course.id)
        return added

    async def roster_remove(self, course, name):
        if name in course.roster:
            raise sandboxes.Refusal(409, "in-course-file",
                                    f"{name} is listed in the course file; remove them from course.yaml and publish it.")
        await self.db.run(_roster_remove, course, name)
        await self.sync_learner_group(course.id)

    # -- demo state ----------------------------------------------------------

    async def seed_allocations(self, specs):
        """Create the allocations in ``specs`` that do not exist yet (the demo's)."""
        for spec in await self.db.run(_seed_allocations, specs):
            log.info("Seeded allocation %s (%s GPU-hours)", spec["id"], spec["gpu_hours"])
