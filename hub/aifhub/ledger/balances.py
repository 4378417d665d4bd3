"""What has been granted, charged and held, per allocation, course and learner window, and the rate card.

Charged amounts come from the sessions' own totals: a session's ``charged_*`` is the sum of its usage
events, written in the same transaction as each event, so the figures cost a pass over sessions, not over
every event ever written. Only sessions that straddle the start of a quota window read their events (those
that end after it).

held = what active sessions' holds have not yet been charged; remaining = granted - charged - held.
"""

from sqlalchemy import and_, bindparam, case, func, or_, select, text

from ..state.base import UTCDateTime
from .models import Allocation, GpuRate, SandboxSession, UsageEvent
from .units import PPM

SS, EV = SandboxSession, UsageEvent


_RATE = (
    select(GpuRate.weight_ppm)
    .where(GpuRate.kind == bindparam("kind"), GpuRate.effective_from <= bindparam("at", type_=UTCDateTime()))
    .order_by(GpuRate.effective_from.desc())
    .limit(1)
)


def rate_ppm(db, kind, at):
    """The weight of a GPU kind effective at ``at`` (a full GPU when the kind is unknown)."""
    if not kind:
        return 0
    weight = db.scalar(_RATE, {"kind": kind, "at": at})
    return PPM if weight is None else weight


class RateCard:
    """All rates, read once: the weight of a kind at a moment, without a query per session."""

    def __init__(self, db):
        self.rates = {}
        for r in db.scalars(select(GpuRate).order_by(GpuRate.effective_from)):
            self.rates.setdefault(r.kind, []).append((r.effective_from, r.weight_ppm))

    def weight(self, kind, at):
        weight = PPM
        for since, w in self.rates.get(kind, ()):
            if since <= at:
                weight = w
        return weight


def record_rates(db, weights, now):
    """Write the weights of the admin's GPU kinds (``{kind: weight_ppm}``) into the rate card where they differ from
    the weight in effect now: a changed weight takes effect from ``now``, what was charged before keeps its own.
    Returns the kinds whose weight was written."""
    card = RateCard(db)
    changed = []
    for kind, weight in sorted(weights.items()):
        current = card.rates.get(kind)
        if current is None or card.weight(kind, now) != weight:
            db.add(GpuRate(kind=kind, weight_ppm=int(weight), effective_from=now))
            changed.append(kind)
    return changed


def _held(hold, charged):
    """What active sessions hold beyond what they have been charged (ended sessions hold nothing)."""
    return func.coalesce(func.sum(case((and_(SS.state == "active", hold > charged), hold - charged), else_=0)), 0)


# charged GPU, charged CPU, held GPU, held CPU: one pass over the sessions of a scope
FIGURES = (
    func.coalesce(func.sum(SS.charged_gpu_ms), 0),
    func.coalesce(func.sum(SS.charged_cpu_ms), 0),
    _held(SS.hold_gpu_ms, SS.charged_gpu_ms),
    _held(SS.hold_cpu_ms, SS.charged_cpu_ms),
)


def _figures(db, *where):
    return tuple(int(x) for x in db.execute(select(*FIGURES).where(*where)).one())


def allocation_balance(db, allocation):
    charged_gpu, charged_cpu, held_gpu, _ = _figures(db, SS.allocation_id == allocation.id)
    return {
        "granted_gpu_ms": allocation.granted_gpu_ms,
        "used_gpu_ms": charged_gpu,
        "held_gpu_ms": held_gpu,
        "remaining_gpu_ms": allocation.granted_gpu_ms - charged_gpu - held_gpu,
        "used_cpu_ms": charged_cpu,
    }


def course_usage(db, course_id):
    charged_gpu, charged_cpu, held_gpu, held_cpu = _figures(db, SS.course_id == course_id)
    return {"used_gpu_ms": charged_gpu, "held_gpu_ms": held_gpu, "used_cpu_ms": charged_cpu, "held_cpu_ms": held_cpu}


def window_charges(db, course_id, since, users=None, straddling_only=False):
    """``{user: (gpu_ms, cpu_ms)}`` charged in ``course_id`` by events that end after ``since``.

    Sessions started at or after ``since`` count whole (every event of theirs ends after it); sessions that
    started before and ran past it count their events that end after it (``straddling_only``: just those).
    """
    whole = select(SS.user, func.sum(SS.charged_gpu_ms), func.sum(SS.charged_cpu_ms)).where(
        SS.course_id == course_id, SS.started_at >= since
    )
    straddling = (
        select(EV.user, func.sum(EV.gpu_ms), func.sum(EV.cpu_ms))
        .join(SS, EV.session_id == SS.id)
        .where(
            SS.course_id == course_id,
            SS.started_at < since,
            or_(SS.state == "active", SS.ended_at > since),
            EV.end_at > since,
        )
    )
    if users is not None:
        whole, straddling = whole.where(SS.user.in_(users)), straddling.where(SS.user.in_(users))
    out = {}
    for part in ([] if straddling_only else [whole.group_by(SS.user)]) + [straddling.group_by(EV.user)]:
        for user, gpu, cpu in db.execute(part):
            before = out.get(user, (0, 0))
            out[user] = (before[0] + int(gpu or 0), before[1] + int(cpu or 0))
    return out


def learner_usage(db, user, course_id, since):
    """Charged in the window starting at ``since``, plus what the learner's active sessions hold."""
    used_gpu, used_cpu = window_charges(db, course_id, since, users=[user]).get(user, (0, 0))
    _, _, held_gpu, held_cpu = _figures(db, SS.user == user, SS.course_id == course_id, SS.state == "active")
    return {"used_gpu_ms": used_gpu, "held_gpu_ms": held_gpu, "used_cpu_ms": used_cpu, "held_cpu_ms": held_cpu}


def _sum(expr, where):
    return f"(SELECT coalesce(sum({expr}), 0) FROM sandbox_sessions WHERE {where})"


_HELD_GPU = "CASE WHEN state = 'active' AND hold_gpu_ms > charged_gpu_ms THEN hold_gpu_ms - charged_gpu_ms ELSE 0 END"
_HELD_CPU = "CASE WHEN state = 'active' AND hold_cpu_ms > charged_cpu_ms THEN hold_cpu_ms - charged_cpu_ms ELSE 0 END"
_STRADDLING = (
    "(SELECT coalesce(sum(e.{unit}_ms), 0) FROM usage_events e JOIN sandbox_sessions s ON e.session_id = s.id "
    'WHERE s.course_id = :course AND s."user" = :user AND s.started_at < :since '
    "AND (s.state = 'active' OR s.ended_at > :since) AND e.end_at > :since)"
)
_LEARNER = 'course_id = :course AND "user" = :user'
# Every figure one learner's limits in one course need, in one statement (an admission's, a page's):
# allocation charged and held, course charged and held, the learner's window charges and holds.
LEARNER_FIGURES = text(
    "SELECT "
    + ", ".join(
        [
            _sum("charged_gpu_ms", "allocation_id = :allocation"),
            _sum("charged_cpu_ms", "allocation_id = :allocation"),
            _sum(_HELD_GPU, "allocation_id = :allocation AND state = 'active'"),
            _sum(_HELD_CPU, "allocation_id = :allocation AND state = 'active'"),
            _sum("charged_gpu_ms", "course_id = :course"),
            _sum("charged_cpu_ms", "course_id = :course"),
            _sum(_HELD_GPU, "course_id = :course AND state = 'active'"),
            _sum(_HELD_CPU, "course_id = :course AND state = 'active'"),
            _sum("charged_gpu_ms", f"{_LEARNER} AND started_at >= :since"),
            _sum("charged_cpu_ms", f"{_LEARNER} AND started_at >= :since"),
            _STRADDLING.format(unit="gpu"),
            _STRADDLING.format(unit="cpu"),
            _sum(_HELD_GPU, f"{_LEARNER} AND state = 'active'"),
            _sum(_HELD_CPU, f"{_LEARNER} AND state = 'active'"),
        ]
    )
).bindparams(bindparam("since", type_=UTCDateTime()))


class LearnerSnapshot:
    """:class:`UsageSnapshot`'s figures for one learner in one course, read in one statement."""

    def __init__(self, db, course_id, user, allocation_id, since):
        f = [
            int(x)
            for x in db.execute(
                LEARNER_FIGURES, {"allocation": allocation_id or "", "course": course_id, "user": user, "since": since}
            ).one()
        ]
        self.alloc_charged = {allocation_id: (f[0], f[1])} if allocation_id else {}
        self.alloc_held = {allocation_id: (f[2], f[3])} if allocation_id else {}
        self.course_charged, self.course_held = {course_id: (f[4], f[5])}, {course_id: (f[6], f[7])}
        self.learner_charged = {(course_id, user): (f[8] + f[10], f[9] + f[11])}
        self.learner_held = {(course_id, user): (f[12], f[13])}


def allocations(db):
    return list(db.scalars(select(Allocation).order_by(Allocation.id)))


class UsageSnapshot:
    """Charged and held amounts for many allocations, courses and learners, read in a few grouped queries.

    ``windows``: ``{course_id: window start}`` for courses with a learner quota.
    ``users``: restrict learner figures to these users (None: all).
    """

    def __init__(self, db, course_ids, windows, users=None, allocation_ids=None):
        allocation_ids = [a for a in (allocation_ids or []) if a]
        self.alloc_charged, self.alloc_held = self._by(db, SS.allocation_id, allocation_ids)
        self.course_charged, self.course_held = self._by(db, SS.course_id, list(course_ids))
        self.learner_charged = {}
        for course_id, start in windows.items():
            for user, figures in window_charges(db, course_id, start, users).items():
                self.learner_charged[(course_id, user)] = figures
        q = select(SS.course_id, SS.user, FIGURES[2], FIGURES[3]).where(
            SS.state == "active", SS.course_id.in_(list(windows))
        )
        if users is not None:
            q = q.where(SS.user.in_(users))
        self.learner_held = {(c, u): (int(g), int(p)) for c, u, g, p in db.execute(q.group_by(SS.course_id, SS.user))}

    @staticmethod
    def _by(db, column, keys):
        charged, held = {}, {}
        if keys:
            for key, cg, cc, hg, hc in db.execute(select(column, *FIGURES).where(column.in_(keys)).group_by(column)):
                charged[key], held[key] = (int(cg), int(cc)), (int(hg), int(hc))
        return charged, held

    @staticmethod
    def get(table, key):
        return table.get(key, (0, 0))
