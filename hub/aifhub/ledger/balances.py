"""What has been granted, charged and held, per allocation, course and learner window.

held = what active sessions' holds have not yet been charged; remaining = granted - charged - held.
"""

from sqlalchemy import case, func, select

from .models import Allocation, GpuRate, SandboxSession, UsageEvent
from .units import PPM


def rate_ppm(db, kind, at):
    """The weight of a GPU kind effective at ``at`` (a full GPU when the kind is unknown)."""
    if not kind:
        return 0
    weight = db.scalar(
        select(GpuRate.weight_ppm).where(GpuRate.kind == kind, GpuRate.effective_from <= at)
        .order_by(GpuRate.effective_from.desc()).limit(1)
    )
    return PPM if weight is None else weight


def _held(column_hold, column_charged):
    return func.coalesce(func.sum(case((column_hold > column_charged, column_hold - column_charged), else_=0)), 0)


def _active(*where):
    return select(
        _held(SandboxSession.hold_gpu_ms, SandboxSession.charged_gpu_ms),
        _held(SandboxSession.hold_cpu_ms, SandboxSession.charged_cpu_ms),
    ).where(SandboxSession.state == "active", *where)


def _charged(*where):
    return select(func.coalesce(func.sum(UsageEvent.gpu_ms), 0), func.coalesce(func.sum(UsageEvent.cpu_ms), 0)).where(*where)


def allocation_balance(db, allocation):
    charged_gpu, charged_cpu = db.execute(_charged(UsageEvent.allocation_id == allocation.id)).one()
    held_gpu, _ = db.execute(_active(SandboxSession.allocation_id == allocation.id)).one()
    return {
        "granted_gpu_ms": allocation.granted_gpu_ms,
        "used_gpu_ms": int(charged_gpu),
        "held_gpu_ms": int(held_gpu),
        "remaining_gpu_ms": allocation.granted_gpu_ms - int(charged_gpu) - int(held_gpu),
        "used_cpu_ms": int(charged_cpu),
    }


def course_usage(db, course_id):
    charged_gpu, charged_cpu = db.execute(_charged(UsageEvent.course_id == course_id)).one()
    held_gpu, held_cpu = db.execute(_active(SandboxSession.course_id == course_id)).one()
    return {"used_gpu_ms": int(charged_gpu), "held_gpu_ms": int(held_gpu),
            "used_cpu_ms": int(charged_cpu), "held_cpu_ms": int(held_cpu)}


def learner_usage(db, user, course_id, since):
    """Charged in the window starting at ``since``, plus what the learner's active sessions hold."""
    charged_gpu, charged_cpu = db.execute(_charged(
        UsageEvent.user == user, UsageEvent.course_id == course_id, UsageEvent.end_at > since)).one()
    held_gpu, held_cpu = db.execute(_active(SandboxSession.user == user, SandboxSession.course_id == course_id)).one()
    return {"used_gpu_ms": int(charged_gpu), "held_gpu_ms": int(held_gpu),
            "used_cpu_ms": int(charged_cpu), "held_cpu_ms": int(held_cpu)}


def allocations(db):
    return list(db.scalars(select(Allocation).order_by(Allocation.id)))
