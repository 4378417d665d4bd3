"""Admission, at the top of the ledger: open a session for a server, within every limit, with a hold and
exclusive GPU devices.

Everything here runs inside the caller's transaction (one unit of work), so a crash never leaves a device
claimed by a session that does not exist. Below it: :mod:`.limits` (what is left), :mod:`.sessions`.
"""

from dataclasses import dataclass, field

from sqlalchemy import insert, text

from ..errors import Refusal
from .balances import rate_ppm
from .limits import check_allocation, limits_for, place_hold
from .models import GpuClaim, SandboxSession, utcnow
from .sessions import active_session, end_session, free_devices, learner_uid
from .units import charge_ms


def shared_refusal(course, device):
    """Every free share of the course's kind lies on a GPU another course uses (time-slice/MPS: no memory
    isolation between holders)."""
    return (
        f"No GPU for {course.title} right now: the free {device.sharing} shares of kind '{device.kind}' are on GPUs "
        f"that another course's sandboxes use, and {device.sharing} sharing does not isolate GPU memory between "
        "holders, so aifhub does not put two courses on one GPU. Try again when a sandbox stops (an administrator "
        "may allow it for this kind with allow_cross_course: true)."
    )


# a new session, written without the ORM's unit of work (an admission is on the hot path of a spawn storm)
NEW_SESSION = (
    insert(SandboxSession.__table__)
    .values(state="active", seq=0, charged_gpu_ms=0, charged_cpu_ms=0, warned_percent=0)
    .returning(SandboxSession.__table__.c.id)
)


@dataclass
class Admission:
    session_id: int
    uid: int
    devices: list = field(default_factory=list)  # [GpuDevice.to_dict(), ...]

    def to_dict(self):
        return {"session_id": self.session_id, "uid": self.uid, "devices": self.devices}


def serialize_admissions(db):
    """Admissions run one at a time: SQLite's BEGIN IMMEDIATE does it; PostgreSQL takes a transaction lock."""
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text("SELECT pg_advisory_xact_lock(hashtext('aifhub-admission'))"))


def admit(
    db,
    course,
    user,
    server_name,
    inventory,
    first_uid,
    now=None,
    default_session_s=4 * 3600,
    learner_quota=True,
    devices_first=(),
    pending=False,
):
    """Open a session for ``user``'s server on ``course``: check the limits, place a hold, claim GPUs.

    Access must have been decided already. The limits (allocation, course
    budget, learner quota) raise :class:`Refusal` when one is used up; ``learner_quota=False``
    leaves the learner quota out (grading jobs, which the course pays for). Raises :class:`Refusal`
    (``gpu-busy``) when not enough devices are free, ``no-gpu`` when the machine has too few of the kind.
    ``inventory`` ``None`` means the cluster places GPUs (Kubernetes): no local device is claimed.
    ``devices_first``: ids to claim when free (a warm sandbox's). ``pending``: the sandbox still has to be
    placed and started (a Kubernetes pod): the session holds but is not charged until
    :func:`aifhub.ledger.sessions.mark_running`.
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
        free = free_devices(db, inventory, gpu.kind, course.id)
        if len(matching) < gpu.count:
            raise Refusal(
                "no-gpu",
                f"{course.title} needs {gpu.count} GPU(s) of kind '{gpu.kind}', "
                f"but this machine has {len(matching)}. Ask an administrator.",
            )
        if len(free) < gpu.count and len(free_devices(db, inventory, gpu.kind)) >= gpu.count:
            raise Refusal("gpu-shared", shared_refusal(course, matching[0]))
        if len(free) < gpu.count:
            busy = len(matching) - len(free)
            raise Refusal(
                "gpu-busy",
                f"No free GPU for {course.title}: all {len(matching)} GPU(s) of kind '{gpu.kind}' are in use "
                f"({busy} busy). Try again when a sandbox stops.",
            )
        preferred = [d for d in free if d.id in set(devices_first)]
        devices = (preferred + [d for d in free if d not in preferred])[: gpu.count]

    now = now or utcnow()
    kind = devices[0].kind if devices else (gpu.kind if gpu else None)
    count = gpu.count if gpu else 0
    weight = rate_ppm(db, kind, now)
    cpu_millis = int(round((course.sandbox.cpu or 1) * 1000))
    session_s = course.sandbox.max_session_seconds or default_session_s
    gpu_ms, cpu_ms = charge_ms(session_s * 1000, weight, count, cpu_millis)
    expected = {"gpu": gpu_ms, "cpu": cpu_ms}
    allocation = check_allocation(db, course, now, needs_gpu=expected["gpu"] > 0)
    limits = limits_for(db, course, user, now, allocation)
    if not learner_quota:  # grading: the course and its allocation pay, no learner's quota
        limits = [lim for lim in limits if lim.scope != "learner"]
    hold = place_hold(limits, course, expected)

    session_id = db.execute(
        NEW_SESSION,
        {
            "user": user,
            "server_name": server_name,
            "course_id": course.id,
            "gpu_kind": kind,
            "started_at": now,
            "last_charged_at": now,
            "allocation_id": allocation.id if allocation else course.allocation,
            "gpu_count": count,
            "cpu_millis": cpu_millis,
            "max_session_s": course.sandbox.max_session_seconds,
            "hold_gpu_ms": hold["gpu"],
            "hold_cpu_ms": hold["cpu"],
            "pending": pending,
        },
    ).scalar_one()
    if devices:
        db.execute(insert(GpuClaim.__table__), [{"device_id": d.id, "session_id": session_id} for d in devices])
    return Admission(session_id, learner_uid(db, user, first_uid), [d.to_dict() for d in devices])
