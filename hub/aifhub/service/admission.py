"""Admission of sandboxes and of GPU grading jobs, and the offers that say beforehand what admission would say.

A spawn is admitted when the learner may start the course (:mod:`.membership`), a device of the course's
GPU kind is free (local pool) and the ledger places a hold within every limit; the answer names the
session, the learner's uid and the devices. Grading a GPU course's submission is admitted the same way,
charged to the course (user ``aifhub-grader``) without a learner quota.
"""

import logging

from ..catalog.access import decide_access
from ..ledger import sandboxes
from ..ledger.errors import Refusal
from ..ledger.limits import limits_for
from ..ledger.models import utcnow
from . import membership

log = logging.getLogger(__name__)
GRADER = "aifhub-grader"  # the ledger's user for GPU time spent grading a course's submissions


# -- units of work ------------------------------------------------------------

def pool_status(s, inventory):
    """Per GPU kind: devices in total and free right now (``inventory`` None: the cluster places GPUs)."""
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


def offers(s, catalog, user, admin, inventory):
    """The courses ``user`` may see, each with whether it can start now and why not."""
    enrolled_in = membership.enrolled_courses(s, user)
    taken = sandboxes.claimed_devices(s) if inventory is not None else set()
    now = utcnow()
    out = []
    for course in sorted(catalog.courses.values(), key=lambda c: c.title):
        enrolled = course.id in enrolled_in
        decision = decide_access(course, user, admin=admin, enrolled=enrolled, today=membership.course_today(course))
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
        out.append(entry)
    return out


def quotas(s, course, user):
    return [lim.to_dict() for lim in limits_for(s, course, user, utcnow())]


def _admit(s, course, user, server_name, inventory, first_uid, default_session_s, enrol_as):
    """Admission, and the enrolment an open course's learner gets with it, in one transaction."""
    admission = sandboxes.admit(s, course, user, server_name, inventory, first_uid, default_session_s=default_session_s)
    enrolled = membership.enrol(s, user, course.id, enrol_as) if enrol_as else False
    return admission, enrolled


def _admit_grading(s, course, server, inventory, first_uid, expected_s):
    return sandboxes.admit(s, course, GRADER, server, inventory, first_uid, default_session_s=expected_s,
                           learner_quota=False).devices


class Admission:
    """Admits spawns and GPU grading jobs against the GPU pool (``inventory``; None when the cluster places
    GPUs) and the ledger."""

    def __init__(self, db, courses, members, inventory, first_uid, default_session_s=4 * 3600):
        self.db = db
        self.courses = courses
        self.members = members
        self.inventory = None if inventory is None else list(inventory)
        self.first_uid = first_uid
        self.default_session_s = default_session_s
        self.refusals = {}  # reason -> count, for the metrics
        self.grading_running = set()  # (GRADER, server) of grading jobs holding GPUs: metered like servers

    async def offers(self, user, admin):
        """The courses ``user`` may see, each with whether it can start now and why not."""
        return await self.db.run(offers, self.courses.catalog, user, admin, self.inventory)

    async def pool_status(self):
        return await self.db.run(pool_status, self.inventory)

    async def quotas(self, course, user):
        """The limits on ``user``'s sandbox in ``course`` (used, held, limit, reset)."""
        return await self.db.run(quotas, course, user)

    async def admit(self, user, server_name, course_id, admin):
        """Admit a spawn. Returns a JSON-ready dict; raises Refusal."""
        if not course_id:
            raise Refusal(400, "no-course", "Choose a course to start (send {\"course\": \"<id>\"}).")
        catalog = self.courses.catalog
        course = catalog.get(course_id)
        if course is None:
            if course_id in catalog.broken:
                raise Refusal(409, "broken-course", f"The course '{course_id}' has errors in its course file and "
                                                    "cannot start; its instructors have been told.")
            raise Refusal(404, "unknown-course", f"There is no course '{course_id}'.")
        decision = await self.members.access(course, user, admin)
        if not decision.allowed:
            raise Refusal(403, decision.reason, decision.message)
        enrol_as = "open" if course.enrollment == "open" and decision.role == "learner" else None
        try:
            admission, enrolled = await self.db.run(_admit, course, user, server_name, self.inventory, self.first_uid,
                                                    self.default_session_s, enrol_as)
        except Refusal as refusal:
            self.refusals[refusal.reason] = self.refusals.get(refusal.reason, 0) + 1
            raise
        if enrolled:
            await self.members.enrolled_with_admission(course.id, user)
        return admission.to_dict() | {"course": course.summary(), "materials": str(course.path), "role": decision.role}

    async def release(self, user, server_name, reason):
        """Settle the server's session (charge it to now, release its hold and devices); its id, or None."""
        return await self.db.run(sandboxes.release, user, server_name, reason)

    async def admit_grading(self, course_id, job_id, expected_s, cluster=False):
        """GPU time for grading one submission of a GPU course, charged to the course like a sandbox's.

        Returns the devices from the local pool (``[]`` when the course needs none, or when the cluster
        places the GPU, as for sandboxes or with ``cluster`` (grading Jobs): the Job asks for it, and the
        session is charged while the job runs);
        raises Refusal (409 ``gpu-busy`` when no local device is free now, 403 when the course's
        allocation or budget is used up).
        """
        course = self.courses.get(course_id)
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
