"""Metering: charge running sessions in idempotent events, settle stopped ones, decide who must stop.

The service's loop calls :func:`tick` with the hub's own list of running
servers; the hub's start and stop events alone are known to miss cases.
"""

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select

from .balances import rate_ppm
from .limits import limits_from, snapshot_for
from aifhub.ledger.models import Allocation, GpuRate, SandboxSession, UsageEvent, utcnow
from .sandboxes import end_session
from aifhub.ledger.units import PPM

WARN_AT = (80, 90)


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


def charge(db, session, until, rates=None):
    """Charge ``session`` from its last charge up to ``until`` as one event (session, seq+1).

    Returns the event, or None when there is nothing to charge. The event and
    the session's new totals are written in the caller's transaction, so a
    crash loses or duplicates nothing.
    """
    since = session.last_charged_at or session.started_at
    if session.charge_until is not None:
        until = min(until, session.charge_until)
    if until <= since:
        return None
    elapsed_ms = int((until - since).total_seconds() * 1000)
    if not session.gpu_count:
        weight = 0
    else:
        weight = rates.weight(session.gpu_kind, since) if rates else rate_ppm(db, session.gpu_kind, since)
    event = UsageEvent(
        session_id=session.id,
        seq=session.seq + 1,
        user=session.user,
        course_id=session.course_id,
        allocation_id=session.allocation_id,
        gpu_kind=session.gpu_kind,
        start_at=since,
        end_at=until,
        gpu_ms=elapsed_ms * weight * session.gpu_count // PPM,
        cpu_ms=elapsed_ms * session.cpu_millis // 1000,
    )
    db.add(event)
    session.seq += 1
    session.charged_gpu_ms += event.gpu_ms
    session.charged_cpu_ms += event.cpu_ms
    session.last_charged_at = until
    return event


def settle(db, session, at, reason, rates=None):
    """Charge up to ``at`` (never before the last charge) and end the session; its hold is released."""
    charge(db, session, at, rates)
    end_session(session, reason, at=max(at, session.last_charged_at or at))


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
    if course is None:
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
    rate = session.gpu_count * weight / PPM if tightest.unit == "gpu" else session.cpu_millis / 1000
    seconds_left = (tightest.limit_ms - tightest.used_ms) / 1000 / rate if rate else float("inf")
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


def tick(db, running, asked_at, catalog, grace_s=120, settle_grace_s=10, now=None):
    """One metering pass.

    ``running``: ``{(user, server_name)}`` the hub reported at ``asked_at``.
    Running sessions are charged up to ``now``; sessions the hub no longer runs
    (admitted more than ``settle_grace_s`` before ``asked_at``) are settled at
    their last charge, the last time they were known to run. The limits are
    read once for all sessions, in a few grouped queries.
    """
    now = now or utcnow()
    result = TickResult()
    cutoff = asked_at - timedelta(seconds=settle_grace_s)
    rates = RateCard(db)
    still_running = []
    for session in db.scalars(select(SandboxSession).where(SandboxSession.state == "active")).all():
        if (session.user, session.server_name) not in running:
            if session.started_at <= cutoff:
                settle(db, session, session.last_charged_at or session.started_at, "server no longer running", rates)
                result.settled.append(session.id)
            continue
        if charge(db, session, now, rates):
            result.charged += 1
        still_running.append(session)
    db.flush()

    courses = {s.course_id: catalog.get(s.course_id) for s in still_running}
    courses = {k: c for k, c in courses.items() if c is not None}
    snap = snapshot_for(db, list(courses.values()), now)
    allocs = {
        a.id: a
        for a in db.scalars(
            select(Allocation).where(Allocation.id.in_({c.allocation for c in courses.values() if c.allocation}))
        )
    }
    for session in still_running:
        course = courses.get(session.course_id)
        if course is None:
            continue
        limits = limits_from(snap, course, session.user, allocs.get(course.allocation), now)
        _enforce(session, course, limits, rates.weight(session.gpu_kind, now), now, grace_s, result)
    return result
