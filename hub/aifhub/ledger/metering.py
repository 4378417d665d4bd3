"""Metering: charge running sessions in idempotent events, settle stopped ones, decide who must stop.

Above :mod:`.sessions` and :mod:`.limits`, below :mod:`.admission`.

The service's loop calls :func:`tick` with the hub's own list of running
servers; the hub's start and stop events alone are known to miss cases.
"""

import math
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import BigInteger, false, func, insert, literal, or_, select, true, update

from ..state.base import UTCDateTime
from .balances import RateCard, rate_ppm, window_charges
from .limits import limits_from, quota_window, snapshot_for
from .models import Allocation, SandboxSession, UsageEvent, utcnow
from .sessions import active_session, end_session
from .units import charge_ms, hours_to_ms, rates_per_s

SS = SandboxSession
EVENT_COLUMNS = [
    "session_id",
    "seq",
    "user",
    "course_id",
    "allocation_id",
    "gpu_kind",
    "start_at",
    "end_at",
    "gpu_ms",
    "cpu_ms",
]

WARN_AT = (80, 90)


def _weight(db, session, at, rates=None):
    """The weight of ``session``'s GPU kind at ``at`` (0 for a session without GPUs)."""
    if not session.gpu_count:
        return 0
    return rates.weight(session.gpu_kind, at) if rates else rate_ppm(db, session.gpu_kind, at)


def charge(db, session, until, rates=None):
    """Charge ``session`` from its last charge up to ``until`` as one event (session, seq+1).

    Returns the event, or None when there is nothing to charge. The event and
    the session's new totals are written in the caller's transaction, so a
    crash loses or duplicates nothing.
    """
    if session.pending:  # admitted, not running yet (a pod waiting for a node): nothing to charge
        return None
    since = session.last_charged_at or session.started_at
    if session.charge_until is not None:
        until = min(until, session.charge_until)
    if until <= since:
        return None
    elapsed_ms = int((until - since).total_seconds() * 1000)
    gpu_ms, cpu_ms = charge_ms(elapsed_ms, _weight(db, session, since, rates), session.gpu_count, session.cpu_millis)
    event = UsageEvent(
        session_id=session.id,
        seq=session.seq + 1,
        user=session.user,
        course_id=session.course_id,
        allocation_id=session.allocation_id,
        gpu_kind=session.gpu_kind,
        start_at=since,
        end_at=until,
        gpu_ms=gpu_ms,
        cpu_ms=cpu_ms,
    )
    db.add(event)
    session.seq += 1
    session.charged_gpu_ms += event.gpu_ms
    session.charged_cpu_ms += event.cpu_ms
    session.last_charged_at = until
    return event


def credit_after(db, session, at, rates=None):
    """Take back what ``session`` was charged after ``at`` (an idle stop: the charge ends where the idleness
    began) as one correcting event (session, seq+1) with negative amounts, never more than was charged.

    Returns the event, or None when nothing was charged after ``at``. Written in the caller's transaction,
    like :func:`charge`."""
    since, until = at, session.last_charged_at
    if until is None or until <= since:
        return None
    elapsed_ms = int((until - since).total_seconds() * 1000)
    gpu_ms, cpu_ms = charge_ms(elapsed_ms, _weight(db, session, since, rates), session.gpu_count, session.cpu_millis)
    gpu_ms, cpu_ms = min(session.charged_gpu_ms, gpu_ms), min(session.charged_cpu_ms, cpu_ms)
    event = UsageEvent(
        session_id=session.id,
        seq=session.seq + 1,
        user=session.user,
        course_id=session.course_id,
        allocation_id=session.allocation_id,
        gpu_kind=session.gpu_kind,
        start_at=since,
        end_at=until,
        gpu_ms=-gpu_ms,
        cpu_ms=-cpu_ms,
    )
    db.add(event)
    session.seq += 1
    session.charged_gpu_ms -= gpu_ms
    session.charged_cpu_ms -= cpu_ms
    return event


def correct_to(db, session, gpu_ms, elapsed_ms):
    """An ended ``session``'s charge made the scheduler's own figure (Slurm's accounting: ``gpu_ms`` of GPU TRES
    time over ``elapsed_ms``, the kind's weight applied) as one correcting event (session, seq+1) with the
    difference, positive or negative. Returns the event, or None when the charge already matches. Written in the
    caller's transaction, beside the record that makes it happen once (aifhub.slurmacct.usage)."""
    weight = _weight(db, session, session.started_at)
    gpu, _ = charge_ms(gpu_ms, weight, 1, 0)
    _, cpu = charge_ms(elapsed_ms, 0, 0, session.cpu_millis)
    gpu, cpu = gpu - session.charged_gpu_ms, cpu - session.charged_cpu_ms
    if not gpu and not cpu:
        return None
    end = session.ended_at or session.last_charged_at or session.started_at
    event = UsageEvent(
        **{c: getattr(session, c) for c in ("user", "course_id", "allocation_id", "gpu_kind")},
        session_id=session.id, seq=session.seq + 1, start_at=session.started_at, end_at=end, gpu_ms=gpu, cpu_ms=cpu,
    )  # fmt: skip
    db.add(event)
    session.seq += 1
    session.charged_gpu_ms += gpu
    session.charged_cpu_ms += cpu
    return event


def settle(db, session, at, reason, rates=None):
    """Charge up to ``at`` (never before the last charge) and end the session; its hold is released."""
    charge(db, session, at, rates)
    end_session(session, reason, at=max(at, session.last_charged_at or at))


def release(db, user, server_name, reason, now=None):
    """Settle the active session of ``user``'s server, if any: charge it up to now, release its hold
    and its devices. Returns its id, or None."""
    session = active_session(db, user, server_name)
    if session is None:
        return None
    settle(db, session, now or utcnow(), reason)
    return session.id


@dataclass
class TickResult:
    charged: int = 0
    settled: list = field(default_factory=list)  # session ids
    warnings: list = field(default_factory=list)  # (user, server_name, percent, message)
    stops: list = field(default_factory=list)  # (user, server_name, reason)


def _stop(session, now, reason, result):
    """Decide to stop: nothing after ``now`` is charged, however long the sandbox takes to stop."""
    if session.charge_until is None:
        session.charge_until = now
        session.stop_reason = reason
    result.stops.append((session.user, session.server_name, session.stop_reason))


def _enforce(session, course, limits, weight, now, grace_s, result):
    """Warn at 80 and 90 percent; stop when a limit or max_session runs out (notice ``grace_s`` ahead)."""
    if course is None or session.pending:
        return
    if session.charge_until is not None:  # already told to stop: ask again until the hub has
        result.stops.append((session.user, session.server_name, session.stop_reason))
        return
    if session.max_session_s and (now - session.started_at).total_seconds() >= session.max_session_s:
        _stop(session, now, f"The longest session of {course.title} ({course.sandbox.max_session}) is reached.", result)
        return
    draws = {"gpu": session.gpu_count > 0, "cpu": True}
    limits = [lim for lim in limits if draws[lim.unit]]
    if not limits:
        return
    tightest = max(limits, key=lambda lim: lim.percent)
    if tightest.used_ms >= tightest.limit_ms:
        _stop(session, now, tightest.refusal(course).message, result)
        return
    gpu_per_s, cpu_per_s = rates_per_s(weight, session.gpu_count, session.cpu_millis)
    rate = gpu_per_s if tightest.unit == "gpu" else cpu_per_s
    seconds_left = (tightest.limit_ms - tightest.used_ms) / rate if rate else float("inf")
    if seconds_left <= grace_s and session.warned_percent < 100:
        session.warned_percent = 100
        result.warnings.append(
            (
                session.user,
                session.server_name,
                100,
                f"Your sandbox for {course.title} stops in about {max(1, round(seconds_left / 60))} minute(s): "
                f"the {tightest.scope} limit is nearly used up. Save your work.",
            )
        )
        return
    level = max((w for w in WARN_AT if tightest.percent >= w), default=0)
    if level > session.warned_percent:
        session.warned_percent = level
        unit = "GPU" if tightest.unit == "gpu" else "CPU"
        result.warnings.append(
            (
                session.user,
                session.server_name,
                level,
                f"You have used {level}% of your {unit}-hours ({tightest.scope} limit) for {course.title}.",
            )
        )


def _chunks(ids, size=500):
    ids = sorted(ids)
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def _sessions(db, ids):
    """The ORM sessions of ``ids``, in id order (loaded in chunks: a few at a time in a tick)."""
    out = []
    for chunk in _chunks(ids):
        out += db.scalars(select(SS).where(SS.id.in_(chunk)).order_by(SS.id)).all()
    return out


# Every active session's id, user and server, read from the index alone (no ORM objects): the tick's only read
# of all of them. How they draw comes back grouped (:data:`DRAWS`), one row per kind of session.
ACTIVE_KEYS = "SELECT id, \"user\", server_name FROM sandbox_sessions WHERE state = 'active'"
BULK_AT_LEAST = 32  # sessions last charged at the same moment at the same rate: charged by one statement
CHARGEABLE = (SS.state == "active", SS.pending == false(), SS.charge_until.is_(None))  # running, not told to stop
DRAW_KEY = (SS.last_charged_at, SS.gpu_kind, SS.gpu_count, SS.cpu_millis)
DRAWS = (
    select(*DRAW_KEY, SS.course_id, SS.max_session_s, func.count())
    .where(*CHARGEABLE)
    .group_by(*DRAW_KEY, SS.course_id, SS.max_session_s)
)


@dataclass
class _Pass:
    """What one pass over the active sessions found, for the steps of a tick."""

    young: set = field(default_factory=set)  # not charged this tick: too recent to settle, or pending (pod not running)
    single: list = field(default_factory=list)  # told to stop, never charged, or in a small group: one by one
    groups: list = field(default_factory=list)  # (last charge, kind, count, cpu) of many sessions: by statement
    stopping: list = field(default_factory=list)  # told to stop already
    rates: dict = field(default_factory=dict)  # course -> fastest (GPU, CPU) ms per second a session draws
    max_session: set = field(default_factory=set)  # the distinct max_session_s of running sessions


def _active_keys(db):
    cursor = db.connection().connection.cursor()
    try:
        cursor.execute(ACTIVE_KEYS)
        return cursor.fetchall()
    finally:
        cursor.close()


def _in_group(key, young):
    """The running sessions of one draw key (see :data:`DRAW_KEY`), but the ``young`` ones."""
    last, kind, count, cpu_millis = key
    return (
        *CHARGEABLE,
        SS.last_charged_at == last,
        SS.gpu_kind.is_(None) if kind is None else SS.gpu_kind == kind,
        SS.gpu_count == count,
        SS.cpu_millis == cpu_millis,
        SS.id.not_in(sorted(young)),
    )


def _scan(db, running, cutoff, rates, result, now):
    """Settle the sessions the hub no longer runs, and sort the others for charging and enforcement."""
    found = _Pass()
    gone = [sid for sid, user, server in _active_keys(db) if (user, server) not in running]
    for session in _sessions(db, gone):
        if session.started_at <= cutoff:
            settle(db, session, session.last_charged_at or session.started_at, "server no longer running", rates)
            result.settled.append(session.id)
        else:
            found.young.add(session.id)
    db.flush()
    active = SS.state == "active"
    # admitted, its pod not running yet: neither charged nor enforced (its hold stays)
    found.young |= set(db.scalars(select(SS.id).where(active, SS.pending == true())))
    found.stopping = [
        sid
        for sid in db.scalars(select(SS.id).where(active, SS.pending == false(), SS.charge_until.is_not(None)))
        if sid not in found.young
    ]
    found.single = list(found.stopping)
    counts, draws = {}, set()
    for last, kind, count, cpu_millis, course_id, max_s, n in db.execute(DRAWS):
        counts[(last, kind, count, cpu_millis)] = counts.get((last, kind, count, cpu_millis), 0) + n
        draws.add((course_id, kind, count, cpu_millis, max_s))
    if any(key[0] is None for key in counts):  # never charged
        found.single += db.scalars(select(SS.id).where(*CHARGEABLE, SS.last_charged_at.is_(None))).all()
    for key, n in counts.items():
        if key[0] is None:
            continue
        if n >= BULK_AT_LEAST:
            found.groups.append(key)
        else:
            found.single += db.scalars(select(SS.id).where(*_in_group(key, found.young))).all()
    found.single = [sid for sid in found.single if sid not in found.young]
    weights = {kind: rates.weight(kind, now) for kind in {d[1] for d in draws}}
    for course_id, kind, count, cpu_millis, max_s in draws:
        gpu, cpu = found.rates.get(course_id, (0.0, 0))
        gpu_per_s, cpu_per_s = rates_per_s(weights[kind], count, cpu_millis)
        found.rates[course_id] = (max(gpu, gpu_per_s), max(cpu, cpu_per_s))
        if max_s:
            found.max_session.add(max_s)
    return found


def _charge_singly(db, ids, now, rates, result):
    for session in _sessions(db, ids):
        if charge(db, session, now, rates):
            result.charged += 1
    db.flush()


def _charge_in_groups(db, found, now, rates, result):
    """Sessions last charged at the same moment at the same rate get the same event (each with its own
    session and next sequence number) that :func:`charge` would write: one INSERT ... SELECT and one UPDATE
    for each large group."""
    for key in found.groups:
        since, kind, count, cpu_millis = key
        if now <= since:
            continue
        elapsed_ms = int((now - since).total_seconds() * 1000)
        gpu_ms, cpu_ms = charge_ms(elapsed_ms, rates.weight(kind, since), count, cpu_millis)
        group = _in_group(key, found.young)
        events = select(
            SS.id,
            SS.seq + 1,
            SS.user,
            SS.course_id,
            SS.allocation_id,
            SS.gpu_kind,
            literal(since, UTCDateTime()),
            literal(now, UTCDateTime()),
            literal(gpu_ms, BigInteger()),
            literal(cpu_ms, BigInteger()),
        ).where(*group)
        db.execute(insert(UsageEvent).from_select(EVENT_COLUMNS, events))
        updated = db.execute(
            update(SS)
            .where(*group)
            .values(
                seq=SS.seq + 1,
                charged_gpu_ms=SS.charged_gpu_ms + gpu_ms,
                charged_cpu_ms=SS.charged_cpu_ms + cpu_ms,
                last_charged_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        result.charged += updated.rowcount


def _near(limit_ms, used_ms, rate_ms_per_s, grace_s):
    """Whether ``used_ms`` of a limit is where :func:`_enforce` may act: a warning (80 %), the last notice
    (``grace_s`` before it runs out at ``rate_ms_per_s``, the fastest a session of the course draws) or a stop."""
    return used_ms >= min(0.8 * limit_ms, limit_ms - grace_s * rate_ms_per_s)


def _near_learners(db, course, since, quota, rate, grace_s):
    """The learners of ``course`` whose usage in the window from ``since`` is near their quota, read with
    only those learners' sums coming back."""
    straddling = window_charges(db, course.id, since, straddling_only=True)
    most = [max((f[i] for f in straddling.values()), default=0) for i in range(2)]
    floors = {
        unit: math.floor(min(0.8 * limit, limit - grace_s * rate[unit])) - most[i]
        for i, unit in enumerate(("gpu", "cpu"))
        if (limit := quota.get(unit)) is not None
    }
    sums = {"gpu": func.sum(SS.charged_gpu_ms), "cpu": func.sum(SS.charged_cpu_ms)}
    q = (
        select(SS.user, sums["gpu"], sums["cpu"])
        .where(SS.course_id == course.id, SS.started_at >= since)
        .group_by(SS.user)
        .having(or_(*(sums[unit] >= floor for unit, floor in floors.items())))
    )
    used = {user: (int(g or 0), int(c or 0)) for user, g, c in db.execute(q)}
    for user, (g, c) in straddling.items():
        before = used.get(user, (0, 0))
        used[user] = (before[0] + g, before[1] + c)
    return {
        user
        for user, figures in used.items()
        if any(
            _near(limit, figures[i], rate[unit], grace_s)
            for i, unit in enumerate(("gpu", "cpu"))
            if (limit := quota.get(unit)) is not None
        )
    }


def _candidates(db, catalog, found, now, grace_s):
    """Ids of running sessions that enforcement may act on: past ``max_session``, or in a course whose
    allocation or budget, or whose learner's quota, is near a limit. The others cannot be warned or stopped
    in this tick, so they are not read one by one."""
    free = (SS.state == "active", SS.charge_until.is_(None), SS.id.not_in(sorted(found.young)))
    ids = set()
    for max_s in found.max_session:
        ids |= set(
            db.scalars(
                select(SS.id).where(*free, SS.max_session_s == max_s, SS.started_at <= now - timedelta(seconds=max_s))
            )
        )
    courses = {cid: catalog.get(cid) for cid in found.rates if catalog.get(cid) is not None}
    snap = snapshot_for(db, list(courses.values()), now, users=[])  # allocations' and courses' totals only
    allocs = {
        a.id: a
        for a in db.scalars(
            select(Allocation).where(Allocation.id.in_({c.allocation for c in courses.values() if c.allocation}))
        )
    }
    for course_id, course in courses.items():
        rate = dict(zip(("gpu", "cpu"), found.rates[course_id]))
        shared = [
            lim for lim in limits_from(snap, course, None, allocs.get(course.allocation), now) if lim.scope != "learner"
        ]
        if any(_near(lim.limit_ms, lim.used_ms, rate[lim.unit], grace_s) for lim in shared):
            ids |= set(db.scalars(select(SS.id).where(*free, SS.course_id == course_id)))
            continue
        if course.quota is None:
            continue
        quota = {
            unit: hours_to_ms(getattr(course.quota, f"{unit}_hours"))
            for unit in ("gpu", "cpu")
            if getattr(course.quota, f"{unit}_hours") is not None
        }
        near = _near_learners(db, course, quota_window(course, now)[0], quota, rate, grace_s) if quota else set()
        for chunk in _chunks(near):
            ids |= set(db.scalars(select(SS.id).where(*free, SS.course_id == course_id, SS.user.in_(chunk))))
    return ids


def _enforce_all(db, catalog, found, now, rates, grace_s, result):
    for chunk in _chunks(found.stopping):
        for user, server, reason, course_id in db.execute(
            select(SS.user, SS.server_name, SS.stop_reason, SS.course_id).where(SS.id.in_(chunk)).order_by(SS.id)
        ):
            if catalog.get(course_id) is not None:  # already told to stop: ask the hub again until it has
                result.stops.append((user, server, reason))
    sessions = _sessions(db, _candidates(db, catalog, found, now, grace_s))
    if not sessions:  # nobody near a limit or their longest session: no figures to read
        return
    courses = {s.course_id: catalog.get(s.course_id) for s in sessions}
    snap = snapshot_for(
        db, [c for c in courses.values() if c is not None], now, users=sorted({s.user for s in sessions})
    )
    allocs = {
        a.id: a
        for a in db.scalars(
            select(Allocation).where(
                Allocation.id.in_({c.allocation for c in courses.values() if c is not None and c.allocation})
            )
        )
    }
    for session in sessions:
        course = courses[session.course_id]
        if course is not None:
            limits = limits_from(snap, course, session.user, allocs.get(course.allocation), now)
            _enforce(session, course, limits, rates.weight(session.gpu_kind, now), now, grace_s, result)


def tick(db, running, asked_at, catalog, grace_s=120, settle_grace_s=10, now=None):
    """One metering pass.

    ``running``: ``{(user, server_name)}`` the hub reported at ``asked_at``.
    Running sessions are charged up to ``now``; sessions the hub no longer runs
    (admitted more than ``settle_grace_s`` before ``asked_at``) are settled at
    their last charge, the last time they were known to run. Charges are
    written for groups of sessions at once, and only sessions near a limit or
    their longest session are read one by one for enforcement.
    """
    now = now or utcnow()
    result = TickResult()
    rates = RateCard(db)
    db.flush()
    found = _scan(db, running, asked_at - timedelta(seconds=settle_grace_s), rates, result, now)
    _charge_singly(db, found.single, now, rates, result)
    _charge_in_groups(db, found, now, rates, result)
    _enforce_all(db, catalog, found, now, rates, grace_s, result)
    db.flush()
    return result
