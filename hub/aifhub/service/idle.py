"""The idle rule of a course (``idle: {after: 30m, grace: 5m}``): a sandbox nobody uses is stopped.

Idle means that the sandbox used nothing: no activity the hub knows of (the single-user server reports
kernel and terminal activity, the proxy reports requests), no CPU time of its processes (its cgroup's
CPU time grew by less than ``BUSY_CPU_SHARE`` of a core between two looks: what an idle Jupyter server
spends on its own) and, on GPUs where NVML can tell, no utilisation of its devices. A sandbox whose
processes ran (a background job the hub never sees, detached with ``setsid``) is in use, and the time
they ran is never credited back: :class:`UseWatch` remembers when each sandbox last used CPU or a GPU,
and idleness begins after that. A sandbox whose cgroup cannot be read (no cgroups; Kubernetes pods)
is judged by the hub's activity and its GPUs alone.

Idle for ``after``: the learner is warned on their pages; still idle ``grace`` later: the sandbox stops
(its work folder is kept), and the charge ends where the idleness began: what was charged beyond that
point is credited back in one correcting usage event of the session.
"""

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from ..isolation.cgroups import CgroupError, Cgroups, group_prefix
from ..ledger import metering
from ..ledger.models import LearnerUid, SandboxSession

log = logging.getLogger(__name__)
BUSY_PERCENT = 5  # GPU utilisation above which a device counts as in use
BUSY_CPU_SHARE = 0.02  # cores: CPU use above which a sandbox counts as in use (an idle Jupyter server stays below)


class UseWatch:
    """When each running sandbox (``(user, server)``) last used CPU or a GPU, as far as the service saw.

    :meth:`cpu` is given each sandbox's cgroup CPU time at every look; growth faster than
    ``BUSY_CPU_SHARE`` since the previous look, or the first look at a sandbox (what it did before is
    unknown: the service may just have started), marks it used at this look. ``idle_pass`` marks
    sandboxes whose GPUs are busy. Kept in memory: after a restart of the service the first look
    counts as use, so no time before it is credited back."""

    def __init__(self):
        self.samples = {}  # key -> (cpu seconds, monotonic seconds)
        self.last_used = {}  # key -> datetime

    def cpu(self, key, cpu_s, mono, now):
        previous = self.samples.get(key)
        self.samples[key] = (cpu_s, mono)
        if previous is None or cpu_s < previous[0]:  # first look, or a new cgroup under the same name
            self.last_used[key] = now
        elif cpu_s - previous[0] > BUSY_CPU_SHARE * max(mono - previous[1], 1.0):
            self.last_used[key] = now

    def forget(self, running):
        """Drop what is known of sandboxes no longer running."""
        for table in (self.samples, self.last_used):
            for key in [k for k in table if k not in running]:
                del table[key]


def _uids(s, users):
    return dict(s.execute(select(LearnerUid.user, LearnerUid.uid).where(LearnerUid.user.in_(users))).all())


class SandboxCpu:
    """The CPU time of local sandboxes, read from their cgroups: ``<prefix>uid<uid>[-<server>]`` as the hub's
    spawner names them, or the group of a warm sandbox handed to the learner (``warm.handed_groups``)."""

    def __init__(self, db, work_root, warm=None):
        self.db, self.prefix, self.warm = db, group_prefix(Path(work_root)), warm
        try:
            self.cgroups = Cgroups.detect()
        except (CgroupError, OSError) as exc:
            log.info("Idle rule: no sandbox cgroups to read CPU time from (%s); the hub's activity decides", exc)
            self.cgroups = None

    def _group(self, key, uids, handed):
        user, server = key
        if key in handed:
            return handed[key]
        if user in uids:
            return self.cgroups.group(f"{self.prefix}uid{uids[user]}" + (f"-{server}" if server else ""))
        return None

    async def cpu_seconds(self, keys):
        """``{(user, server): CPU seconds}`` of the sandboxes in ``keys`` whose cgroup could be read."""
        if self.cgroups is None or not keys:
            return {}
        uids = await self.db.run(_uids, sorted({user for user, _ in keys}))
        handed = getattr(self.warm, "handed_groups", {})

        def read():
            out = {}
            for key in keys:
                group = self._group(key, uids, handed)
                value = group.cpu_seconds() if group is not None else None
                if value is not None:
                    out[key] = value
            for key in [k for k, g in handed.items() if not g.dirs[0].is_dir()]:
                handed.pop(key, None)  # that sandbox ended and its group is gone
            return out

        return await asyncio.to_thread(read)


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


def idle_pass(s, catalog, activity, now, gpu_busy=frozenset(), last_used=None):
    """Apply the idle rules to the running sessions in ``activity`` (``{(user, server): last activity}``).

    ``gpu_busy``: devices NVML saw in use now, or a function of a session (:func:`gpu_in_use`): in use counts as
    use; ``last_used``: ``{(user, server): when}`` the sandbox last used CPU or a GPU (:attr:`UseWatch.last_used`;
    sessions with busy GPUs are marked in it). Returns ``(warnings, stops)``: ``[(user, server, message)]`` each;
    a stopped session is charged up to where its idleness began.
    """
    last_used = {} if last_used is None else last_used
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
        if gpu_in_use(session, gpu_busy):
            last_used[key] = now
        idle_since = max(t for t in (activity[key], session.started_at, last_used.get(key)) if t is not None)
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
