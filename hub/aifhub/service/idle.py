"""The idle rule of a course (``idle: {after: 30m, grace: 5m}``): a sandbox nobody uses is stopped.

Idle means no activity the hub knows of (the single-user server reports kernel and terminal activity,
the proxy reports requests) and, on GPUs where NVML can tell, no utilisation of the sandbox's devices.
Idle for ``after``: the learner is warned on their pages; still idle ``grace`` later: the sandbox stops
(its work folder is kept), and the charge ends where the idleness began: what was charged beyond that
point is credited back in one correcting usage event of the session.
"""

import logging
from datetime import timedelta

from sqlalchemy import select

from ..ledger import metering
from ..ledger.models import SandboxSession

log = logging.getLogger(__name__)
BUSY_PERCENT = 5  # GPU utilisation above which a device counts as in use


def gpu_utilisation(device_ids):
    """``{device id: percent}`` from NVML for the given devices (ids as NVML indexes); ``{}`` without NVML."""
    if not device_ids:
        return {}
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no driver, no library, no GPU: activity alone decides
        return {}
    try:
        out = {}
        for device in device_ids:
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(int(device))
                out[device] = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            except (pynvml.NVMLError, ValueError):
                continue
        return out
    finally:
        pynvml.nvmlShutdown()


def gpu_in_use(session, gpu_busy):
    """Whether the session's GPU counts as activity: ``gpu_busy`` is a set of busy device ids, or the GPU
    telemetry's ``gpu_busy(session)`` (True, False, or None when it has no reading)."""
    if callable(gpu_busy):
        return gpu_busy(session) is True
    return bool(set(session.devices) & set(gpu_busy))


def verdict(rule, idle_since, warned_at, now):
    """``"active"``, ``"warn"``, ``"warned"`` or ``"stop"`` for a sandbox idle since ``idle_since``."""
    if (now - idle_since).total_seconds() < rule.after_s:
        return "active"
    if warned_at is None:
        return "warn"
    return "stop" if (now - warned_at).total_seconds() >= rule.grace_s else "warned"


def idle_pass(s, catalog, activity, now, gpu_busy=frozenset()):
    """Apply the idle rules to the running sessions in ``activity`` (``{(user, server): last activity}``).

    ``gpu_busy``: devices NVML saw in use now, or a function of a session (:func:`gpu_in_use`); in use counts as
    activity. Returns ``(warnings, stops)``:
    ``[(user, server, message)]`` each; a stopped session is charged up to where its idleness began.
    """
    warnings, stops = [], []
    courses = {c.id: c for c in catalog.courses.values() if c.idle is not None}
    if not courses:
        return warnings, stops
    q = select(SandboxSession).where(
        SandboxSession.state == "active", SandboxSession.course_id.in_(courses), SandboxSession.charge_until.is_(None)
    )
    for session in s.scalars(q):
        key = (session.user, session.server_name)
        if key not in activity:
            continue
        course, rule = courses[session.course_id], courses[session.course_id].idle
        idle_since = max(t for t in (activity[key], session.started_at) if t is not None)
        if gpu_in_use(session, gpu_busy):
            idle_since = now
        decision = verdict(rule, idle_since, session.idle_warned_at, now)
        minutes = max(1, round((now - idle_since).total_seconds() / 60))
        if decision == "active" and session.idle_warned_at is not None:
            session.idle_warned_at = None  # used again: the warning is over
        elif decision == "warn":
            session.idle_warned_at = now
            stop_at = now + timedelta(seconds=rule.grace_s)
            warnings.append(
                (
                    session.user,
                    session.server_name,
                    f"Your sandbox for {course.title} has been idle for {minutes} min: it stops at "
                    f"{stop_at:%H:%M} UTC unless you use it. Your files are kept.",
                )
            )
        elif decision == "stop":
            session.charge_until = idle_since
            session.stop_reason = (
                f"it was idle for {minutes} min (the idle rule of {course.title}); your files are "
                f"kept, and nothing after {idle_since:%H:%M} UTC is charged."
            )
            metering.credit_after(s, session, idle_since)
            stops.append((session.user, session.server_name, session.stop_reason))
    return warnings, stops


def idle_notices(s, catalog, user=None):
    """``{user: message}`` for learners whose idle sandbox will stop soon."""
    q = select(SandboxSession).where(
        SandboxSession.state == "active",
        SandboxSession.idle_warned_at.is_not(None),
        SandboxSession.charge_until.is_(None),
    )
    if user:
        q = q.where(SandboxSession.user == user)
    out = {}
    for session in s.scalars(q):
        course = catalog.get(session.course_id)
        if course is None or course.idle is None:
            continue
        stop_at = session.idle_warned_at + timedelta(seconds=course.idle.grace_s)
        out[session.user] = (
            f"Your sandbox for {course.title} is idle: it stops at {stop_at:%H:%M} UTC unless you "
            "use it. Your files are kept."
        )
    return out
