"""The nested limits on a learner's sandbox: allocation -> course budget -> learner quota per window.

One function computes them all, with used, held, limit and reset, so that
admission, ``/api/v1/me`` and enforcement tell the same story.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select

from ..errors import Refusal
from .allocations import allocation_state
from .balances import LearnerSnapshot, UsageSnapshot
from .models import Allocation
from .units import fmt_hours, hours_to_ms
from .windows import window_bounds


@dataclass
class Limit:
    scope: str  # allocation | course | learner
    unit: str  # gpu | cpu
    limit_ms: int
    used_ms: int
    held_ms: int
    label: str
    reset_at: datetime | None = None
    window: str | None = None

    @property
    def remaining_ms(self):
        return self.limit_ms - self.used_ms - self.held_ms

    @property
    def percent(self):
        return 100.0 if self.limit_ms <= 0 else 100.0 * self.used_ms / self.limit_ms

    def to_dict(self):
        return {
            "scope": self.scope,
            "unit": self.unit,
            "label": self.label,
            "window": self.window,
            "limit_hours": round(self.limit_ms / 3.6e6, 4),
            "used_hours": round(self.used_ms / 3.6e6, 4),
            "held_hours": round(self.held_ms / 3.6e6, 4),
            "remaining_hours": round(self.remaining_ms / 3.6e6, 4),
            "percent": round(self.percent, 1),
            "resets_at": self.reset_at.isoformat() if self.reset_at else None,
        }

    def refusal(self, course):
        unit = "GPU-hours" if self.unit == "gpu" else "CPU-hours"
        figures = f"{fmt_hours(self.used_ms)} of {fmt_hours(self.limit_ms)} {unit} used"
        if self.held_ms:
            figures += f", {fmt_hours(self.held_ms)} held by running sandboxes"
        if self.scope == "learner":
            when = f"; it resets on {self.reset_at:%a %Y-%m-%d %H:%M} UTC" if self.reset_at else " for the whole course"
            return Refusal("quota", f"Your {unit} for {course.title} are used up ({figures} this {self.window}){when}.")
        if self.scope == "course":
            return Refusal(
                "course-budget", f"The budget of {course.title} is used up ({figures}). Ask its instructors."
            )
        return Refusal(
            "allocation-exhausted",
            f"The allocation {self.label} that pays for {course.title} is used up ({figures}). Ask an administrator.",
        )


_LOCK_ALLOCATION = select(Allocation).where(Allocation.id == bindparam("id")).with_for_update()


def check_allocation(db, course, now, needs_gpu):
    """The allocation paying for ``course``, checked valid today; raises Refusal. None if nothing needs paying."""
    if not course.allocation:
        if needs_gpu:
            raise Refusal(
                "no-allocation",
                f"No allocation pays for {course.title}, so its GPU sandbox cannot start. Ask an administrator.",
            )
        return None
    # lock the allocation's row: concurrent admissions on it queue here (PostgreSQL; SQLite locks the database)
    allocation = db.scalar(_LOCK_ALLOCATION, {"id": course.allocation})
    if allocation is None:
        if not needs_gpu:
            return None  # CPU time is tracked, and nothing needs paying
        raise Refusal(
            "no-allocation",
            f"The allocation {course.allocation} that pays for {course.title} is not recorded. Ask an administrator.",
        )
    problem = allocation_state(allocation, now.date())
    if problem:
        reason, sentence = problem
        raise Refusal(reason, f"{course.title} cannot start: {sentence}.")
    return allocation


def quota_window(course, now):
    sched = course.schedule
    return window_bounds(course.quota.window, now, sched.timezone if sched else "UTC", sched.start if sched else None)


def snapshot_for(db, courses, now, users=None):
    """A :class:`UsageSnapshot` covering ``courses`` (and only ``users`` when given); a course's own totals are
    read only when it has a budget (they limit nothing else)."""
    windows = {c.id: quota_window(c, now)[0] for c in courses if c.quota is not None}
    return UsageSnapshot(
        db,
        [c.id for c in courses if any((c.budget or {}).get(f"{unit}_hours") is not None for unit in ("gpu", "cpu"))],
        windows,
        users=users,
        allocation_ids=sorted({c.allocation for c in courses if c.allocation}),
    )


def limits_from(snap, course, user, allocation, now):
    """The limits on ``user`` in ``course``, from a snapshot and the course's allocation row (or None)."""
    limits = []
    get = UsageSnapshot.get
    if allocation is not None:
        (used, _), (held, _) = get(snap.alloc_charged, allocation.id), get(snap.alloc_held, allocation.id)
        limits.append(Limit("allocation", "gpu", allocation.granted_gpu_ms, used, held, allocation.id))
    budget = course.budget or {}
    charged, held = get(snap.course_charged, course.id), get(snap.course_held, course.id)
    for i, unit in enumerate(("gpu", "cpu")):
        if budget.get(f"{unit}_hours") is not None:
            limits.append(Limit("course", unit, hours_to_ms(budget[f"{unit}_hours"]), charged[i], held[i], course.id))
    if course.quota is not None:
        _, reset = quota_window(course, now)
        charged, held = get(snap.learner_charged, (course.id, user)), get(snap.learner_held, (course.id, user))
        for i, unit in enumerate(("gpu", "cpu")):
            hours = getattr(course.quota, f"{unit}_hours")
            if hours is not None:
                limits.append(
                    Limit(
                        "learner",
                        unit,
                        hours_to_ms(hours),
                        charged[i],
                        held[i],
                        user,
                        reset_at=reset,
                        window=course.quota.window,
                    )
                )
    return limits


def limits_for(db, course, user, now, allocation=None):
    """Every limit that applies to ``user``'s sandbox in ``course`` right now (its figures in one statement)."""
    if allocation is None and course.allocation:
        allocation = db.get(Allocation, course.allocation)
    since = quota_window(course, now)[0] if course.quota is not None else now
    snap = LearnerSnapshot(db, course.id, user, course.allocation, since)
    return limits_from(snap, course, user, allocation, now)


def place_hold(limits, course, expected):
    """Check every limit the session would draw on; return the hold per unit, capped by what is left.

    ``expected``: ``{"gpu": ms, "cpu": ms}`` the session would use at its longest.
    """
    hold = dict(expected)
    for limit in limits:
        if expected.get(limit.unit, 0) <= 0:
            continue  # this session draws nothing on that unit (e.g. a CPU-only course and GPU-hours)
        if limit.remaining_ms <= 0:
            raise limit.refusal(course)
        hold[limit.unit] = min(hold[limit.unit], limit.remaining_ms)
    return hold
