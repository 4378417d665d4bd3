"""What has been granted, charged and held, per allocation, course and learner window.

held = what active sessions' holds have not yet been charged; remaining = granted - charged - held.
"""

from sqlalchemy import case, func, select

from aifhub.ledger.models import Allocation, GpuRate, SandboxSession, UsageEvent
from aifhub.ledger.units import PPM


def rate_ppm(db, kind, at):
    """The weight of a GPU kind effective at ``at`` (a full GPU when the kind is unknown)."""
    if not kind:
        return 0
    weight = db.scalar(
        select(GpuRate.weight_ppm)
        .where(GpuRate.kind == kind, GpuRate.effective_from <= at)
        .order_by(GpuRate.effective_from.desc())
        .limit(1)
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
    return select(func.coalesce(func.sum(UsageEvent.gpu_ms), 0), func.coalesce(func.sum(UsageEvent.cpu_ms), 0)).where(
        *where
    )


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
    return {
        "used_gpu_ms": int(charged_gpu),
        "held_gpu_ms": int(held_gpu),
        "used_cpu_ms": int(charged_cpu),
        "held_cpu_ms": int(held_cpu),
    }


def learner_usage(db, user, course_id, since):
    """Charged in the window starting at ``since``, plus what the learner's active sessions hold."""
    charged_gpu, charged_cpu = db.execute(
        _charged(UsageEvent.user == user, UsageEvent.course_id == course_id, UsageEvent.end_at > since)
    ).one()
    held_gpu, held_cpu = db.execute(_active(SandboxSession.user == user, SandboxSession.course_id == course_id)).one()
    return {
        "used_gpu_ms": int(charged_gpu),
        "held_gpu_ms": int(held_gpu),
        "used_cpu_ms": int(charged_cpu),
        "held_cpu_ms": int(held_cpu),
    }


def allocations(db):
    return list(db.scalars(select(Allocation).order_by(Allocation.id)))


def _pairs(rows):
    return {key: (int(gpu), int(cpu)) for key, gpu, cpu in rows}


class UsageSnapshot:
    """Charged and held amounts for many allocations, courses and learners, read in a few grouped queries.

    ``windows``: ``{course_id: window start}`` for courses with a learner quota.
    ``users``: restrict learner figures to these users (None: all).
    """

    def __init__(self, db, course_ids, windows, users=None, allocation_ids=None):
        ev, ss = UsageEvent, SandboxSession
        held = (_held(ss.hold_gpu_ms, ss.charged_gpu_ms), _held(ss.hold_cpu_ms, ss.charged_cpu_ms))
        sums = (func.coalesce(func.sum(ev.gpu_ms), 0), func.coalesce(func.sum(ev.cpu_ms), 0))
        allocation_ids = [a for a in (allocation_ids or []) if a]
        self.alloc_charged = _pairs(
            db.execute(
                select(ev.allocation_id, *sums).where(ev.allocation_id.in_(allocation_ids)).group_by(ev.allocation_id)
            )
        )
        self.alloc_held = _pairs(
            db.execute(
                select(ss.allocation_id, *held)
                .where(ss.state == "active", ss.allocation_id.in_(allocation_ids))
                .group_by(ss.allocation_id)
            )
        )
        self.course_charged = _pairs(
            db.execute(select(ev.course_id, *sums).where(ev.course_id.in_(course_ids)).group_by(ev.course_id))
        )
        self.course_held = _pairs(
            db.execute(
                select(ss.course_id, *held)
                .where(ss.state == "active", ss.course_id.in_(course_ids))
                .group_by(ss.course_id)
            )
        )
        self.learner_charged = {}
        for course_id, start in windows.items():
            q = select(ev.user, *sums).where(ev.course_id == course_id, ev.end_at > start)
            if users is not None:
                q = q.where(ev.user.in_(users))
            for user, (gpu, cpu) in _pairs(db.execute(q.group_by(ev.user))).items():
                self.learner_charged[(course_id, user)] = (gpu, cpu)
        q = select(ss.course_id, ss.user, *held).where(ss.state == "active", ss.course_id.in_(list(windows)))
        if users is not None:
            q = q.where(ss.user.in_(users))
        self.learner_held = {(c, u): (int(g), int(p)) for c, u, g, p in db.execute(q.group_by(ss.course_id, ss.user))}

    @staticmethod
    def get(table, key):
        return table.get(key, (0, 0))
