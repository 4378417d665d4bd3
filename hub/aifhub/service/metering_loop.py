"""The metering loop: reconcile the ledger with the hub's list of running servers, charge, warn and stop;
and what learners read of it (quota notices, why a sandbox was stopped)."""

import asyncio
import logging
import time

from sqlalchemy import select

from ..ledger import metering
from ..errors import Refusal
from ..ledger.limits import limits_for
from ..ledger.models import SandboxSession, utcnow
from . import idle

log = logging.getLogger(__name__)


# -- units of work ------------------------------------------------------------


def notices(s, catalog, user=None):
    """Warnings for learners whose running sandboxes near a limit, or will stop for being idle: ``{user: message}``."""
    out = idle.idle_notices(s, catalog, user)
    q = select(SandboxSession).where(SandboxSession.state == "active", SandboxSession.warned_percent > 0)
    if user:
        q = q.where(SandboxSession.user == user)
    for session in s.scalars(q):
        course = catalog.get(session.course_id)
        if course is None:
            continue
        tightest = max(limits_for(s, course, session.user, utcnow()), key=lambda lim: lim.percent, default=None)
        if tightest is None:
            continue
        unit = "GPU" if tightest.unit == "gpu" else "CPU"
        out[session.user] = (
            f"You have used {tightest.percent:.0f}% of your {unit}-hours for {course.title}; "
            "your sandbox stops when they run out."
        )
    return out


def stopped_sessions(s, user, limit):
    q = (
        select(SandboxSession)
        .where(SandboxSession.user == user, SandboxSession.stop_reason.is_not(None))
        .order_by(SandboxSession.id.desc())
        .limit(limit)
    )
    return [
        {"course": x.course_id, "ended_at": x.ended_at.isoformat() if x.ended_at else None, "reason": x.stop_reason}
        for x in s.scalars(q)
    ]


def running_courses(s, user):
    """``{course_id: server_name}`` of the learner's running sandboxes."""
    q = select(SandboxSession.course_id, SandboxSession.server_name).where(
        SandboxSession.state == "active", SandboxSession.user == user
    )
    return {course_id: server for course_id, server in s.execute(q)}


class MeteringLoop:
    """One :meth:`meter` pass per interval (the service's loop calls it): charges what the hub runs (and the
    grading jobs that hold GPUs), settles what it no longer runs, warns, and stops what ran out."""

    def __init__(self, db, courses, hub, servers, inventory=None, stop_grace_s=120, settle_grace_s=10, gpu_use=None):
        self.db = db
        self.gpu_use = gpu_use  # GPU telemetry (GpuUse): sampled each pass, read by the idle rule and the pages
        self.courses = courses
        self.hub = hub
        self.servers = servers  # what the service runs itself (ServiceServers), charged like the hub's servers
        self.inventory = inventory  # the local GPU pool (None: the cluster's), whose use the idle rule reads
        self.stop_grace_s = stop_grace_s
        self.settle_grace_s = settle_grace_s
        self.use = idle.UseWatch()
        self.sandbox_groups = None  # local sandboxes: (user, server) -> their cgroup's CPU seconds (set by wiring.py)

    async def meter(self):
        """One metering pass against the hub's list of running servers; stops what must stop."""
        asked_at = utcnow()
        if self.gpu_use is not None:
            self.gpu_use.kick()  # a sample on a task of its own: the pass never waits for the driver or exporter
        grading = self.servers.running()  # run by the service
        activity = await self.hub.running_with_activity()
        running = set(activity) | grading
        result = await self.db.run(
            metering.tick,
            running,
            asked_at,
            self.courses.catalog,
            grace_s=self.stop_grace_s,
            settle_grace_s=self.settle_grace_s,
        )
        await self._idle(activity, result)
        if result.settled:
            log.info("Settled %d session(s) whose servers stopped without telling us", len(result.settled))
        for user, _server, percent, message in result.warnings:
            log.info("Quota warning for %s (%d%%): %s", user, percent, message)
        for user, server_name, reason in result.stops:
            if (user, server_name) in grading:
                continue  # a grading job ends by itself, within its time limit
            log.warning("Stopping %s's sandbox: %s", user, reason)
            await self.hub.stop_server(user, server_name)
        return result

    async def _idle(self, activity, result):
        """The courses' idle rules: warnings, and stops (added to ``result.stops``) of sandboxes nobody uses."""
        if not any(c.idle for c in self.courses.catalog.courses.values()):
            return
        if self.gpu_use is not None and self.gpu_use.enabled:
            busy = self.gpu_use.gpu_busy  # the last sample's reading of each session
        else:
            devices = [d.id for d in self.inventory or ()]
            busy = {
                d
                for d, pct in (await asyncio.to_thread(idle.gpu_utilisation, devices)).items()
                if pct > idle.BUSY_PERCENT
            }
        now = utcnow()
        if self.sandbox_groups is not None:  # the sandboxes' own CPU time, whatever the hub saw of them
            for key, cpu_s in (await self.sandbox_groups.cpu_seconds(list(activity))).items():
                self.use.cpu(key, cpu_s, time.monotonic(), now)
        self.use.forget(set(activity))
        warnings, stops = await self.db.run(
            idle.idle_pass, self.courses.catalog, activity, now, busy, self.use.last_used
        )
        for user, _server, message in warnings:
            log.info("Idle warning for %s: %s", user, message)
        for user, server, reason in stops:
            log.warning("Stopping %s's idle sandbox: %s", user, reason)
            result.stops.append((user, server, reason))
            await self.hub.stop_server(user, server)

    async def notices(self, user=None):
        return await self.db.run(notices, self.courses.catalog, user)

    async def stopped_sessions(self, user, limit=5):
        return await self.db.run(stopped_sessions, user, limit)

    async def running_courses(self, user):
        return await self.db.run(running_courses, user)

    async def stop_own(self, user, course_id):
        """Stop the learner's sandbox for ``course_id`` (through the hub, which tells the spawner)."""
        server = (await self.running_courses(user)).get(course_id)
        if server is None:
            raise Refusal("not-running", "That sandbox is not running.")
        await self.hub.stop_server(user, server)
