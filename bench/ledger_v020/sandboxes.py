"""Admission of sandboxes, exclusive GPU assignment, release, and reconciliation with the hub.

Everything here runs inside one database transaction per call, so a crash
never leaves a device claimed by a session that does not exist.
"""

from dataclasses import dataclass, field
from sqlalchemy import func, select, text

from .balances import rate_ppm
from .errors import Refusal
from aifhub.ledger.models import Enrollment, GpuClaim, LearnerUid, SandboxSession, utcnow
from aifhub.ledger.units import PPM


@dataclass
class Admission:
    session_id: int
    uid: int
    devices: list = field(default_factory=list)  # [GpuDevice.to_dict(), ...]

    def to_dict(self):
        return {"session_id": self.session_id, "uid": self.uid, "devices": self.devices}


def active_session(db, user, server_name):
    return db.scalar(
        select(SandboxSession).where(
            SandboxSession.state == "active",
            SandboxSession.user == user,
            SandboxSession.server_name == server_name,
        )
    )


def end_session(session, reason, at=None):
    session.state = "ended"
    session.ended_at = at or utcnow()
    session.end_reason = reason
    session.claims.clear()


def claimed_devices(db):
    return set(db.scalars(select(GpuClaim.device_id)))


def free_devices(db, inventory, kind):
    """Devices of the pool that match ``kind`` and nobody holds, in id order."""
    taken = claimed_devices(db)
    return [d for d in inventory if d.matches(kind) and d.id not in taken]


def learner_uid(db, user, first_uid):
    """The learner's sandbox uid, allocated once and kept."""
    row = db.get(LearnerUid, user)
    if row is None:
        highest = db.scalar(select(func.max(LearnerUid.uid)))
        row = LearnerUid(user=user, uid=max(first_uid, (highest or 0) + 1))
        db.add(row)
        db.flush()
    return row.uid


def is_enrolled(db, user, course_id):
    return (
        db.scalar(select(Enrollment.id).where(Enrollment.user == user, Enrollment.course_id == course_id)) is not None
    )


def serialize_admissions(db):
    """Admissions run one at a time: SQLite's BEGIN IMMEDIATE does it; PostgreSQL takes a transaction lock."""
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text("SELECT pg_advisory_xact_lock(hashtext('aifhub-admission'))"))


def admit(
    db, course, user, server_name, inventory, first_uid, now=None, default_session_s=4 * 3600, learner_quota=True
):
    """Open a session for ``user``'s server on ``course``: check the limits, place a hold, claim GPUs.

    Access must have been decided already. The limits (allocation, course
    budget, learner quota) raise :class:`Refusal` (403) when one is used up; ``learner_quota=False``
    leaves the learner quota out (grading jobs, which the course pays for). Raises :class:`Refusal` (409) when
    not enough devices are free. ``inventory`` ``None`` means the cluster places
    GPUs (Kubernetes): no local device is claimed.
    """
    serialize_admissions(db)
    stale = active_session(db, user, server_name)
    if stale is not None:  # the hub starts a server it believes stopped: the old session is over
        end_session(stale, "superseded by a new start")
        db.flush()

    devices = []
    gpu = course.sandbox.gpu
    if gpu is not None and inventory is not None:
        matching = [d for d in inventory if d.matches(gpu.kind)]
        free = free_devices(db, inventory, gpu.kind)
        if len(matching) < gpu.count:
            raise Refusal(
                503,
                "no-gpu",
                f"{course.title} needs {gpu.count} GPU(s) of kind '{gpu.kind}', "
                f"but this machine has {len(matching)}. Ask an administrator.",
            )
        if len(free) < gpu.count:
            busy = len(matching) - len(free)
            raise Refusal(
                409,
                "gpu-busy",
                f"No free GPU for {course.title}: all {len(matching)} GPU(s) of kind '{gpu.kind}' are in use "
                f"({busy} busy). Try again when a sandbox stops.",
            )
        devices = free[: gpu.count]

    from .limits import check_allocation, limits_for, place_hold  # limits build on this module

    now = now or utcnow()
    kind = devices[0].kind if devices else (gpu.kind if gpu else None)
    count = gpu.count if gpu else 0
    weight = rate_ppm(db, kind, now)
    cpu_millis = int(round((course.sandbox.cpu or 1) * 1000))
    session_s = course.sandbox.max_session_seconds or default_session_s
    expected = {"gpu": session_s * 1000 * weight * count // PPM, "cpu": session_s * cpu_millis}
    allocation = check_allocation(db, course, now, needs_gpu=expected["gpu"] > 0)
    limits = limits_for(db, course, user, now, allocation)
    if not learner_quota:  # grading: the course and its allocation pay, no learner's quota
        limits = [lim for lim in limits if lim.scope != "learner"]
    hold = place_hold(limits, course, expected)

    session = SandboxSession(
        user=user,
        server_name=server_name,
        course_id=course.id,
        gpu_kind=kind,
        state="active",
        started_at=now,
        last_charged_at=now,
        allocation_id=allocation.id if allocation else course.allocation,
        gpu_count=count,
        cpu_millis=cpu_millis,
        max_session_s=course.sandbox.max_session_seconds,
        hold_gpu_ms=hold["gpu"],
        hold_cpu_ms=hold["cpu"],
    )
    db.add(session)
    db.flush()
    for d in devices:
        db.add(GpuClaim(device_id=d.id, session_id=session.id))
    db.flush()
    return Admission(session.id, learner_uid(db, user, first_uid), [d.to_dict() for d in devices])


def release(db, user, server_name, reason, now=None):
    """Settle the active session of ``user``'s server, if any: charge it up to now, release its hold
    and its devices."""
    from .metering import settle  # metering builds on this module

    session = active_session(db, user, server_name)
    if session is None:
        return None
    settle(db, session, now or utcnow(), reason)
    return session.id


def active_sessions(db):
    return list(db.scalars(select(SandboxSession).where(SandboxSession.state == "active")))
