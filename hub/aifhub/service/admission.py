"""Admission of sandboxes and of GPU grading jobs, and the offers that say beforehand what admission would say.

A spawn is admitted when the learner may start the course (:mod:`.membership`), a device of the course's
GPU kind is free (local pool) and the ledger places a hold within every limit; the answer names the
session, the learner's uid and the devices. Grading a GPU course's submission is admitted the same way,
charged to the course (user ``aifhub-grader``) without a learner quota.
"""

import logging

from sqlalchemy import select

from ..catalog.access import decide_access
from ..errors import Refusal
from ..ledger import admission as ledger_admission
from ..ledger import metering, sessions
from ..ledger.balances import record_rates
from ..ledger.limits import check_allocation, limits_for
from ..ledger.models import SandboxSession, utcnow
from . import membership, waitlist

log = logging.getLogger(__name__)
GRADER = "aifhub-grader"  # the ledger's user for GPU time spent grading a course's submissions


# -- units of work ------------------------------------------------------------


def pool_status(s, inventory):
    """Per GPU kind: devices in total and free right now (``inventory`` None: the cluster places GPUs)."""
    if inventory is None:
        return {"scheduler": "kubernetes", "devices": [], "kinds": []}
    taken = sessions.claimed_devices(s)
    kinds = {}
    for d in inventory:
        k = kinds.setdefault(d.kind, {"kind": d.kind, "sharing": d.sharing, "total": 0, "free": 0, "gpus": set()})
        k["total"] += 1
        k["free"] += d.id not in taken
        k["gpus"].add(d.gpu)
    for k in kinds.values():
        k["gpus"] = len(k["gpus"])  # physical GPUs the kind's devices lie on
    return {
        "scheduler": "local",
        "devices": [d.to_dict() | {"busy": d.id in taken} for d in inventory],
        "kinds": list(kinds.values()),
    }


def offers(s, catalog, user, admin, inventory, waitlist=False):
    """The courses ``user`` may see, each with whether it can start now and why not (with ``waitlist``, a GPU
    course whose devices are all busy can start: the learner waits in line, ``gpu_wait``)."""
    enrolled_in = membership.enrolled_courses(s, user)
    taken = sessions.claimed_devices(s) if inventory is not None else set()
    now = utcnow()
    out = []
    for course in sorted(catalog.courses.values(), key=lambda c: c.title):
        enrolled = course.id in enrolled_in
        decision = decide_access(course, user, admin=admin, enrolled=enrolled, today=membership.course_today(course))
        if not decision.allowed and decision.reason == "not-enrolled" and course.enrollment == "roster":
            continue  # roster courses are invisible to those not on them
        entry = course.summary() | {
            "access": decision.to_dict(),
            "enrolled": course.on_roster(user) or decision.role != "learner" or enrolled,
        }
        free = None
        if course.sandbox.gpu is not None and inventory is not None:
            free = sum(1 for d in inventory if d.matches(course.sandbox.gpu.kind) and d.id not in taken)
            if free and any(getattr(d, "one_course", False) for d in inventory):
                free = len(sessions.free_devices(s, inventory, course.sandbox.gpu.kind, course.id))
        entry["gpu_free"] = free
        can_start, why = decision.allowed, decision.message
        entry["gpu_wait"] = False
        if can_start and free is not None and free < course.sandbox.gpu.count:
            if waitlist:
                entry["gpu_wait"] = True  # starting puts the learner in the GPU waitlist
            else:
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


def default_course(s, catalog, user, admin, inventory, waitlist=False):
    """The course a spawn with no course starts (a stock client, the admin page's "Start Server"): the one
    ``user`` started last while it is still open to them, else their only course (the only one they belong to,
    or the only one open to them). ``(course id, why)`` in words; refuses when there is no single answer."""
    open_to = offers(s, catalog, user, admin, inventory, waitlist)
    allowed = {c["id"]: c for c in open_to if c["access"]["allowed"]}
    last = s.scalars(
        select(SandboxSession.course_id)
        .where(SandboxSession.user == user, SandboxSession.course_id.in_(list(allowed) or [""]))
        .order_by(SandboxSession.started_at.desc(), SandboxSession.id.desc())
        .limit(1)
    ).first()
    if last is not None:
        return last, "the course you started last"
    theirs = [c for c in allowed.values() if c["enrolled"]]
    if len(theirs) == 1:
        return theirs[0]["id"], "your only course"
    if not theirs and len(allowed) == 1:
        return next(iter(allowed)), "the only course open to you"
    choices = ", ".join(sorted(c["id"] for c in (theirs or allowed.values())))
    raise Refusal(
        "no-course",
        'Choose a course to start (send {"course": "<id>"})'
        + (f"; yours: {choices}." if choices else "; no course is open to you yet."),
    )


def quotas(s, course, user):
    return [lim.to_dict() for lim in limits_for(s, course, user, utcnow())]


def _admit(
    s, course, user, server_name, inventory, first_uid, default_session_s, enrol_as, use_waitlist=False, pending=False
):
    """Admission, and the enrolment an open course's learner gets with it, in one transaction.

    With ``use_waitlist``, a GPU course whose devices are all busy (or that others wait for already)
    puts the learner in line instead: ``(None, False, entry id)``. A learner whose turn has come takes
    the devices held for them. ``pending``: the sandbox is a pod the cluster still has to place; its session
    holds but is not charged until it runs.
    """
    gpu = course.sandbox.gpu
    queued = use_waitlist and gpu is not None and inventory is not None
    if queued:
        entry = waitlist.live_entry(s, user, server_name, course.id)
        if entry is not None and entry.state == "offered":
            waitlist.take_offer(s, entry)
        elif entry is not None:
            return None, False, entry.id
        elif waitlist.waiting_for(s, gpu.kind, inventory):  # others came first
            _refuse_if_used_up(s, course, user)
            return None, False, waitlist.join(s, course, user, server_name).id
    try:
        admission = ledger_admission.admit(
            s, course, user, server_name, inventory, first_uid, default_session_s=default_session_s, pending=pending
        )
    except Refusal as refusal:
        if not (queued and refusal.reason == "gpu-busy"):
            raise
        _refuse_if_used_up(s, course, user)  # no point waiting in line to be refused then
        return None, False, waitlist.join(s, course, user, server_name).id
    enrolled = membership.enrol(s, user, course.id, enrol_as) if enrol_as else False
    return admission, enrolled, None


def _admit_warm(
    s, course, user, server_name, warm_server, warm_devices, inventory, first_uid, default_session_s, enrol_as
):
    """Admission onto a warm sandbox: its session (the course's) ends here, the learner's begins on its devices."""
    from .warm_pool import WARM_USER

    metering.release(s, WARM_USER, warm_server, "handed to a learner")
    admission = ledger_admission.admit(
        s,
        course,
        user,
        server_name,
        inventory,
        first_uid,
        default_session_s=default_session_s,
        devices_first=[d["id"] for d in warm_devices],
    )
    enrolled = membership.enrol(s, user, course.id, enrol_as) if enrol_as else False
    return admission, enrolled


def _refuse_if_used_up(s, course, user):
    now = utcnow()
    allocation = check_allocation(s, course, now, needs_gpu=True)
    for lim in limits_for(s, course, user, now, allocation):
        if lim.unit == "gpu" and lim.remaining_ms <= 0:
            raise lim.refusal(course)


def _admit_grading(s, course, server, inventory, first_uid, expected_s):
    return ledger_admission.admit(
        s, course, GRADER, server, inventory, first_uid, default_session_s=expected_s, learner_quota=False
    ).devices


class Admission:
    """Admits spawns and GPU grading jobs against the GPU pool (``inventory``; None when the cluster places
    GPUs) and the ledger."""

    def __init__(
        self,
        db,
        courses,
        members,
        inventory,
        first_uid,
        default_session_s,
        servers,
        line=None,
        disk=None,
        kinds=None,
        slurm=None,
    ):
        self.db = db
        # sandboxes on Slurm: a learner's association with the course's account is made before their job is
        # submitted (slurm_accounts.py); None elsewhere
        self.slurm = slurm
        self.kinds = dict(kinds or {})  # the admin's GPU kinds ({name: GpuKind}): sharing modes and weights
        self.line = line  # the GPU waitlist (None: a spawn that finds every GPU busy is refused)
        self.courses = courses
        self.members = members
        self.inventory = None if inventory is None else list(inventory)
        self.first_uid = first_uid
        self.default_session_s = default_session_s
        self.refusals = {}  # reason -> count, for the metrics
        # what the service runs itself, metered like the hub's servers (the board the metering loop reads):
        # grading jobs holding GPUs (written here), warm sandboxes and placeholders (written by those)
        self.servers = servers
        self.grading_running, self.warm_running = self.servers.grading, self.servers.warm
        self.disk = disk  # the disk watch (local sandboxes): no start on a nearly full disk
        self.warm = None  # the warm pool, set by the composition root (aifhub.service.wiring) once it is made

    async def offers(self, user, admin):
        """The courses ``user`` may see, each with whether it can start now and why not."""
        found = await self.db.run(offers, self.courses.catalog, user, admin, self.inventory, self.line is not None)
        for entry in found:
            gpu = entry["sandbox"].get("gpu")
            kind = self.kinds.get(gpu["kind"]) if gpu else None
            if kind is not None:
                entry["gpu_share"] = {"sharing": kind.sharing, "title": kind.title or kind.describe()}
        return found

    async def record_rates(self):
        """The GPU kinds' weights into the ledger's rate card (at start); the kinds whose weight changed."""
        weights = {k.name: k.weight_ppm for k in self.kinds.values()}
        return await self.db.run(record_rates, weights, utcnow()) if weights else []

    async def pool_status(self):
        return await self.db.run(pool_status, self.inventory)

    async def quotas(self, course, user):
        """The limits on ``user``'s sandbox in ``course`` (used, held, limit, reset)."""
        return await self.db.run(quotas, course, user)

    async def admit(self, user, server_name, course_id, admin, warm=False, pending=False):
        """Admit a spawn. Returns a JSON-ready dict; raises Refusal. With ``warm``, a ready warm sandbox of the
        course is taken when there is one (``"warm": id`` in the answer: the spawner hands it over). ``pending``:
        the sandbox is a pod the cluster still has to place; nothing is charged until :meth:`running` says it runs."""
        chosen = None
        if not course_id:  # a stock client's spawn: the course the learner started last, or their only one
            course_id, chosen = await self.db.run(
                default_course, self.courses.catalog, user, admin, self.inventory, self.line is not None
            )
            log.info("%s's spawn names no course: starting %s, %s", user, course_id, chosen)
        answer = await self._admit_course(user, server_name, course_id, admin, warm, pending)
        return answer | {"chosen": chosen} if chosen else answer

    async def _admit_course(self, user, server_name, course_id, admin, warm, pending):
        catalog = self.courses.catalog
        course = catalog.get(course_id)
        if course is None:
            if course_id in catalog.broken:
                raise Refusal(
                    "broken-course",
                    f"The course '{course_id}' has errors in its course file and "
                    "cannot start; its instructors have been told.",
                )
            raise Refusal("unknown-course", f"There is no course '{course_id}'.")
        decision = await self.members.access(course, user, admin)
        if not decision.allowed:
            raise Refusal(decision.reason, decision.message)
        if self.disk is not None:
            self.disk.check_room()
        enrol_as = "open" if course.enrollment == "open" and decision.role == "learner" else None
        taken = self.warm.take(course) if warm and self.warm is not None else None
        if taken is not None:
            try:
                admission, enrolled = await self.db.run(
                    _admit_warm,
                    course,
                    user,
                    server_name,
                    taken.server,
                    taken.devices,
                    self.inventory,
                    self.first_uid,
                    self.default_session_s,
                    enrol_as,
                )
            except BaseException:
                self.warm.untake(taken)
                raise
            self.warm.taken(taken)
            if enrolled:
                await self.members.enrolled_with_admission(course.id, user)
            return admission.to_dict() | {
                "course": course.summary(),
                "materials": str(course.path),
                "role": decision.role,
                "warm": taken.id,
            }
        try:
            admission, enrolled, entry = await self.db.run(
                _admit,
                course,
                user,
                server_name,
                self.inventory,
                self.first_uid,
                self.default_session_s,
                enrol_as,
                self.line is not None,
                pending,
            )
        except Refusal as refusal:
            self.refusals[refusal.reason] = self.refusals.get(refusal.reason, 0) + 1
            raise
        if entry is not None:
            await self.line.promote()  # a device may be free for whoever is first (perhaps this learner)
            found = await self.line.status([entry])
            return {"waiting": found.get(entry) or {"id": entry, "state": "waiting"}, "course": course.summary()}
        if enrolled:
            await self.members.enrolled_with_admission(course.id, user)
        if self.slurm is not None:  # a first admission gave the learner a uid: their site account joins Slurm now
            await self.slurm.admitted(user, course)
        return admission.to_dict() | {"course": course.summary(), "materials": str(course.path), "role": decision.role}

    async def running(self, user, server_name, pod=None):
        """The admitted sandbox of ``user``'s server runs now (its pod started, ``namespace/name``): charge it from
        now on."""
        return await self.db.run(sessions.mark_running, user, server_name, pod=pod)

    async def release(self, user, server_name, reason):
        """Settle the server's session (charge it to now, release its hold and devices); its id, or None.

        A freed device goes to the next in the GPU waitlist at once."""
        session_id = await self.db.run(metering.release, user, server_name, reason)
        if self.line is not None:
            await self.line.promote()
        return session_id

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
        devices = await self.db.run(
            _admit_grading, course, server, None if cluster else self.inventory, self.first_uid, expected_s
        )
        self.grading_running.add((GRADER, server))
        return devices

    async def release_grading(self, job_id):
        server = f"grading-{job_id}"
        self.grading_running.discard((GRADER, server))
        await self.release(GRADER, server, "graded")
