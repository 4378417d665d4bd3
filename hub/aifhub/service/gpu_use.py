"""GPU-use telemetry in the service: sampled on the metering loop's rhythm, off its event loop.

Each metering pass :meth:`GpuUse.kick` starts one sample unless the last one is still under way (a slow driver
or exporter never delays metering); the sample reads the cluster's source on a thread (NVML locally, the DCGM
exporter on Kubernetes), turns it into a reading per running GPU session (:mod:`aifhub.gpus.telemetry`), books
the time a session's GPU sat idle into the ledger (``gpu_idle_ms``, in usage exports), and keeps the readings
that learners' pages, instructors' course pages and the idle rule (:meth:`GpuUse.gpu_busy`) read.
"""

import asyncio
import logging

from sqlalchemy import select

from ..gpus.telemetry import idle_increments, kube_reading, local_reading
from ..ledger.models import LearnerUid, SandboxSession, utcnow
from ..ledger.sessions import add_gpu_idle

log = logging.getLogger(__name__)


def gpu_sessions(s):
    """Running GPU sessions: ``[(id, user, server, course, uid, device ids, pod)]``."""
    q = (
        select(SandboxSession, LearnerUid.uid)
        .outerjoin(LearnerUid, LearnerUid.user == SandboxSession.user)
        .where(
            SandboxSession.state == "active",
            SandboxSession.pending.is_(False),
            SandboxSession.gpu_count > 0,
            SandboxSession.charge_until.is_(None),
        )
    )
    return [(x.id, x.user, x.server_name, x.course_id, uid, x.devices, x.pod) for x, uid in s.execute(q)]


class GpuUse:
    """The latest GPU reading of every running GPU session, from ``reader`` (the NVML adapter, local pool
    ``inventory``) or ``exporter`` (the DCGM exporter, Kubernetes)."""

    def __init__(self, db, inventory=None, reader=None, exporter=None, interval_s=60.0):
        self.db = db
        self.devices = {d.id: d.to_dict() for d in inventory or ()}
        self.reader = reader
        self.exporter = exporter
        self.interval_s = interval_s
        self.readings = {}  # (user, server) -> (course, Reading)
        self.sampled_at = None
        self.failures = 0
        self._task = None

    @property
    def enabled(self):
        return self.exporter is not None or (self.reader is not None and bool(self.devices))

    def kick(self):
        """Start a sample unless one is under way; never waits for it."""
        if self.enabled and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self._sample_logged())

    async def _sample_logged(self):
        try:
            await self.sample()
        except Exception as exc:  # a broken driver or an unreachable exporter: no readings, metering goes on
            self.failures += 1
            log.warning("GPU telemetry: sampling failed (%s); the idle rule goes by activity alone", exc)
            self.readings = {}

    async def sample(self, now=None):
        """One sample: read the source (on a thread), keep the readings, book idle GPU time. Returns the readings."""
        running = await self.db.run(gpu_sessions)
        if self.exporter is not None:
            pods = await asyncio.to_thread(self.exporter.read)
            found = {sid: kube_reading(pods, pod) for sid, *_, pod in running}
        else:
            sample = await asyncio.to_thread(self.reader.sample)
            found = {
                sid: local_reading(sample, [self.devices[d] for d in devices if d in self.devices], uid)
                for sid, _u, _s, _c, uid, devices, _p in running
            }
        now = now or utcnow()
        idle = idle_increments(found, self.sampled_at, now, cap_s=2 * self.interval_s)
        if idle:
            await self.db.run(add_gpu_idle, idle)
        self.sampled_at = now
        self.readings = {
            (user, server): (course, found[sid])
            for sid, user, server, course, *_ in running
            if found.get(sid) is not None
        }
        return self.readings

    def gpu_busy(self, session):
        """Whether ``session``'s GPU was in use at the last sample: True, False, or None (no reading; the idle rule
        goes by activity alone)."""
        found = self.readings.get((session.user, session.server_name))
        return None if found is None else found[1].busy

    def for_user(self, user):
        """``{course: reading dict}`` of ``user``'s running GPU sandboxes."""
        return {course: r.to_dict() for (u, _s), (course, r) in self.readings.items() if u == user}

    def for_course(self, course_id):
        """``{learner: reading dict}`` of a course's running GPU sandboxes."""
        return {u: r.to_dict() for (u, _s), (course, r) in self.readings.items() if course == course_id}
