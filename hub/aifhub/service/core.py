"""What the service knows and decides: catalog, GPU pool, sessions and enrolments.

Handlers and loops call into :class:`ServiceCore`; it holds no HTTP code.
"""

import asyncio
import logging
import re
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select

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
        self._lock = asyncio.Lock()
        self.reload_catalog()

    # -- catalog -------------------------------------------------------------

    def reload_catalog(self, force=True):
        """Reload course files; returns True when something changed."""
        fp = fingerprint(self.course_dirs)
        if not force and fp == self._fingerprint:
            return False
        self._fingerprint = fp
        self.catalog = load_catalog(self.course_dirs, load_images(self.images_dir))
        for name, problems in self.catalog.broken.items():
            log.warning("Course %s is broken and unavailable:\n  %s", name, "\n  ".join(map(str, problems)))
        log.info("Catalog: %d course(s), %d broken", len(self.catalog.courses), len(self.catalog.broken))
        apply_staff(self.catalog, self.db)  # instructors granted by logins
        if self.protect_sources:
            self._protect_sources()
        return True

    def _protect_sources(self):
        """Instructors' nbgrader sources (solutions, hidden tests) readable by the hub's user only.

        Learners' sandboxes and grading kernels run as other uids; the hub copies materials for them
        and the grading workers copy what they grade, so nothing of theirs needs to read ``source/``.
        """
        for course in self.catalog.courses.values():
            source = course.path / "source"
            try:
                if source.is_dir() and source.stat().st_mode & 0o077:
                    source.chmod(0o700)
                    log.info("Made %s private to the hub's user (it holds solutions)", source)
            except OSError as exc:
                log.warning("Could not make %s private: %s", source, exc)

    def desired_groups(self):
        """``{group: members}`` that rosters, enrolments and instructor lists call for."""
        with self.db.session() as s:
            enrolled = list(s.execute(select(Enrollment.course_id, Enrollment.user)))
        groups = {}
        for course in self.catalog.courses.values():
            groups[learner_group(course.id)] = set(course.roster)
            groups[instructor_group(course.id)] = set(course.instructors) | course.staff
        for course_id, user in enrolled:
            if learner_group(course_id) in groups:
                groups[learner_group(course_id)].add(user)
        return groups

    async def sync_learner_group(self, course_id):
        """Bring one course's ``nbgrader-<course>`` group up to date (after an enrolment or a roster edit)."""
        if self.hub is not None:
            group = learner_group(course_id)
            await self.hub.sync_group(group, self.desired_groups()[group])

    async def sync_course_groups(self, course_id):
        """Both groups of one course (after a login changed its learners or instructors)."""
        if self.hub is not None:
            desired = self.desired_groups()
            for group in (learner_group(course_id), instructor_group(course_id)):
                await self.hub.sync_group(group, desired[group])

    async def sync_groups(self):
        if self.hub is None:
            return
        for group, members in sorted(self.desired_groups().items()):
            await self.hub.sync_group(group, members)

    # -- access and offers ---------------------------------------------------

    def _enrolled(self, s, user, course_id):
        return sandboxes.is_enrolled(s, user, course_id)

    def access(self, course, user, admin):
        with self.db.session() as s:
            enrolled = self._enrolled(s, user, course.id)
        return decide_access(course, user, admin=admin, enrolled=enrolled, today=course_today(course))

    def pool_status(self):
        """Per GPU kind: devices in total and free right now."""
        with self.db.session() as s:
            taken = sandboxes.claimed_devices(s)
        kinds = {}
        if self.inventory is None:
            return {"scheduler": "kubernetes", "devices": [], "kinds": []}
        for d in self.inventory:
            k = kinds.setdefault(d.kind, {"kind": d.kind, "total": 0, "free": 0})
            k["total"] += 1
            k["free"] += d.id not in taken
        return {"scheduler": "local", "devices": [d.to_dict() | {"busy": d.id in taken} for d in self.inventory], "kinds": list(kinds.values())}

    def free_for(self, course):
        if course.sandbox.gpu is None or self.inventory is None:
            return None
        with self.db.session() as s:
            return len(sandboxes.free_devices(s, self.inventory, course.sandbox.gpu.kind))

    def offers(self, user, admin):
        """The courses ``user`` may see, each with whether it can start now and why not."""
        offers = []
        for course in sorted(self.catalog.courses.values(), key=lambda c: c.title):
            decision = self.access(course, user, admin)
            if not decision.allowed and decision.reason == "not-enrolled" and course.enrollment == "roster":
                continue  # roster courses are invisible to those not on them
            with self.db.session() as s:
                enrolled = (course.on_roster(user) or decision.role != "learner"
                            or self._enrolled(s, user, course.id))
            entry = course.summary() | {"access": decision.to_dict(), "enrolled": enrolled}
            free = self.free_for(course)
            entry["gpu_free"] = free
            can_start, why = decision.allowed, decision.message
            if can_start and free is not None and free < course.sandbox.gpu.count:
                can_start, why = False, f"All GPUs of kind '{course.sandbox.gpu.kind}' are in use right now."
            if decision.allowed:
                with self.db.session() as s:
                    limits = limits_for(s, course, user, utcnow())
                entry["quota"] = [lim.to_dict() for lim in limits]
                draws = {"gpu": course.needs_gpu, "cpu": True}
                exhausted = next((lim for lim in limits if draws[lim.unit] and lim.remaining_ms <= 0), None)
                if can_start and exhausted:
                    can_start, why = False, exhausted.refusal(course).message
            entry["can_start"], entry["why_not"] = can_start, why
            offers.append(entry)
        return offers

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
        with self.db.session() as s:
            if not self._enrolled(s, user, course_id):
                s.add(Enrollment(user=user, course_id=course_id, source=course.enrollment))
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
        decision = self.access(course, user, admin)
        if not decision.allowed:
            raise sandboxes.Refusal(403, decision.reason, decision.message)
        async with self._lock:
            try:
                with self.db.session() as s:
                    admission = sandboxes.admit(s, course, user, server_name, self.inventory, self.first_uid,
                                                default_session_s=self.default_session_s)
            except sandboxes.Refusal as refusal:
                self.refusals[refusal.reason] = self.refusals.get(refusal.reason, 0) + 1
                raise
        if course.enrollment == "open" and decision.role == "learner":
            await self._auto_enrol(course, user)
        return admission.to_dict() | {
            "course": course.summary(),
            "materials": str(course.path),
            "role": decision.role,
        }

    async def _auto_enrol(self, course, user):
        with self.db.session() as s:
            if self._enrolled(s, user, course.id):
                return
            s.add(Enrollment(user=user, course_id=course.id, source="open"))
        try:
            await self.sync_learner_group(course.id)
        except Exception as exc:  # the spawn goes on; the next sync catches up
            log.warning("Group sync after enrolling %s in %s failed: %s", user, course.id, exc)

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
        async with self._lock:
            with self.db.session() as s:
                admission = sandboxes.admit(s, course, GRADER, server, None if cluster else self.inventory,
                                            self.first_uid, default_session_s=expected_s, learner_quota=False)
        self.grading_running.add((GRADER, server))
        return admission.devices

    async def release_grading(self, job_id):
        server = f"grading-{job_id}"
        self.grading_running.discard((GRADER, server))
        await self.release(GRADER, server, "graded")

    async def release(self, user, server_name, reason):
        async with self._lock:
            with self.db.session() as s:
                return sandboxes.release(s, user, server_name, reason)

    async def meter(self):
        """One metering pass against the hub's list of running servers; stops what must stop."""
        asked_at = utcnow()
        running = await self.hub.running_servers() | self.grading_running
        async with self._lock:
            with self.db.session() as s:
                result = metering.tick(s, running, asked_at, self.catalog, grace_s=self.stop_grace_s,
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

    def quotas(self, course, user):
        with self.db.session() as s:
            return [lim.to_dict() for lim in limits_for(s, course, user, utcnow())]

    def notices(self, user=None):
        """Warnings for learners whose running sandboxes near a limit: ``{user: message}``."""
        out = {}
        with self.db.session() as s:
            q = select(SandboxSession).where(SandboxSession.state == "active", SandboxSession.warned_percent > 0)
            if user:
                q = q.where(SandboxSession.user == user)
            for session in s.scalars(q):
                course = self.catalog.get(session.course_id)
                if course is None:
                    continue
                tightest = max(limits_for(s, course, session.user, utcnow()), key=lambda lim: lim.percent, default=None)
                if tightest is None:
                    continue
                unit = "GPU" if tightest.unit == "gpu" else "CPU"
                out[session.user] = (f"You have used {tightest.percent:.0f}% of your {unit}-hours for {course.title}; "
                                     "your sandbox stops when they run out.")
        return out

    def stopped_sessions(self, user, limit=5):
        with self.db.session() as s:
            q = (select(SandboxSession).where(SandboxSession.user == user, SandboxSession.stop_reason.is_not(None))
                 .order_by(SandboxSession.id.desc()).limit(limit))
            return [{"course": x.course_id, "ended_at": x.ended_at.isoformat() if x.ended_at else None,
                     "reason": x.stop_reason} for x in s.scalars(q)]

    def running_courses(self, user):
        """``{course_id: server_name}`` of the learner's running sandboxes."""
        with self.db.session() as s:
            q = select(SandboxSession.course_id, SandboxSession.server_name).where(
                SandboxSession.state == "active", SandboxSession.user == user)
            return {course_id: server for course_id, server in s.execute(q)}

    async def stop_own(self, user, course_id):
        """Stop the learner's sandbox for ``course_id`` (through the hub, which tells the spawner)."""
        server = self.running_courses(user).get(course_id)
        if server is None:
            raise sandboxes.Refusal(404, "not-running", "That sandbox is not running.")
        await self.hub.stop_server(user, server)

    # -- rosters -------------------------------------------------------------

    def roster(self, course):
        """Learners of a course: from course.yaml, added by instructors, or enrolled themselves."""
        members = {name: "course.yaml" for name in course.roster}
        with self.db.session() as s:
            for user, source in s.execute(select(Enrollment.user, Enrollment.source).where(Enrollment.course_id == course.id)):
                members.setdefault(user, {"roster": "added by an instructor"}.get(source, f"enrolled ({source})"))
        return dict(sorted(members.items()))

    async def roster_add(self, course, names):
        names = [n.strip() for n in names if n and n.strip()]
        bad = [n for n in names if not USERNAME.match(n)]
        if bad:
            raise sandboxes.Refusal(400, "bad-name", f"Not valid user names: {', '.join(bad[:5])}")
        added = []
        with self.db.session() as s:
            for name in dict.fromkeys(names):
                if name not in course.roster and not self._enrolled(s, name, course.id):
                    s.add(Enrollment(user=name, course_id=course.id, source="roster"))
                    added.append(name)
        await self.sync_learner_group(course.id)
        return added

    async def roster_remove(self, course, name):
        if name in course.roster:
            raise sandboxes.Refusal(409, "in-course-file",
                                    f"{name} is listed in the course file; remove them from course.yaml and publish it.")
        with self.db.session() as s:
            row = s.scalar(select(Enrollment).where(Enrollment.user == name, Enrollment.course_id == course.id))
            if row is None:
                raise sandboxes.Refusal(404, "not-on-roster", f"{name} is not on the roster of {course.title}.")
            s.delete(row)
        await self.sync_learner_group(course.id)

    # -- demo state ----------------------------------------------------------

    def seed_allocations(self, specs):
        """Create the allocations in ``specs`` that do not exist yet (the demo's)."""
        with self.db.session() as s:
            for spec in specs:
                if s.get(Allocation, spec["id"]) is None:
                    allocations.create(s, spec["id"], spec["gpu_hours"], spec.get("start"), spec.get("end"),
                                       title=spec.get("title", ""), access_call=spec.get("access_call", ""),
                                       owner=spec.get("owner", ""))
                    log.info("Seeded allocation %s (%s GPU-hours)", spec["id"], spec["gpu_hours"])
