"""Placeholders on Kubernetes for courses' scheduled sessions: the cluster's side of warm capacity.

On one machine the warm pool (:mod:`.warm_pool`) keeps ready sandboxes; on Kubernetes the service keeps, from
``lead`` before each session of a course until ``keep`` after its start (at most its end), a ReplicaSet of
placeholder pods (:mod:`aifhub.kube.placeholders`): one per expected learner who has not come yet, each holding
what a learner's pod needs on the course's GPU pool, with the course's image. Learners' pods evict them through
the scheduler's preemption. When the window closes the ReplicaSet goes.

Running placeholders are warm time, paid by the course: each is a session of ``aifhub-warm`` (no learner quota),
metered like a server while it runs and settled when it goes. A course whose allocation or budget cannot pay
gets no placeholders.
"""

import asyncio
import logging

from traitlets import Float, Unicode
from traitlets.config import LoggingConfigurable

from ..catalog.images import load_images
from ..errors import Refusal
from ..kube import podspec
from ..kube.client import load_kube_config
from ..kube.placeholders import PLACEHOLDER, placeholder_replicaset, replicaset_name, wanted
from ..ledger import admission as ledger_admission
from ..ledger import metering
from ..ledger.models import utcnow
from .warm_pool import WARM_USER

log = logging.getLogger(__name__)
FIELD_MANAGER = "aifhub"


class Placeholders(LoggingConfigurable):
    """The service's placeholder ReplicaSets (when the cluster places GPUs: ``--gpus kubernetes``)."""

    lead = Float(
        900.0,
        help="Seconds before a scheduled session when its placeholders are started (time for nodes "
        "to pull the course's image and, with an autoscaler, to join).",
    ).tag(config=True)
    keep = Float(
        1800.0,
        help="Seconds after a session's start (at most its end) that placeholders are kept for learners who come late.",
    ).tag(config=True)
    interval = Float(15.0, help="Seconds between checks of the schedule and the cluster.").tag(config=True)
    scheduler_name = Unicode(
        help="Scheduler of placeholder pods: the learners' (the chart's user scheduler, "
        "e.g. aifhub-user-scheduler), so they pack alike. Empty: the cluster's default."
    ).tag(config=True)

    def __init__(self, db, courses, admission, kube, images_dir, first_uid, **kw):
        super().__init__(**kw)
        self.db, self.courses, self.admission, self.first_uid = db, courses, admission, first_uid
        self.kube = kube  # the KubeSettings grading Jobs use too
        self.namespace, self.kube_config = kube.namespace, kube.kube_config
        self.cluster = kube.cluster()
        self.images_dir = images_dir
        self.charged = {}  # server -> course id: running placeholders with an open warm session
        self.known = None  # courses with a placeholder ReplicaSet, once listed

    async def run(self):
        if not any(getattr(c, "sessions", ()) for c in self.courses.catalog.courses.values()):
            log.info("Placeholders: no course has scheduled sessions (yet); checking every %s s", self.interval)
        while True:
            try:
                await self.step()
            except Exception:
                log.exception("placeholder step failed")
            await asyncio.sleep(self.interval)

    async def step(self, now=None):
        """Make each course's ReplicaSet what its schedule wants now; charge the running placeholders."""
        from kubernetes_asyncio import client

        now = now or utcnow()
        scheduled = any(getattr(c, "sessions", ()) for c in self.courses.catalog.courses.values())
        if not scheduled and self.known == set() and not self.charged:
            return  # nothing to keep, nothing left over: no call to the API server
        await load_kube_config(self.kube_config)
        async with client.ApiClient() as api:
            apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
            have = {
                rs.metadata.labels.get(podspec.COURSE_LABEL): rs.metadata.name
                for rs in (
                    await apps.list_namespaced_replica_set(
                        self.namespace, label_selector=f"{podspec.COMPONENT_LABEL}={PLACEHOLDER}"
                    )
                ).items
            }
            self.known = set(have)
            pods = (
                await core.list_namespaced_pod(
                    self.namespace, label_selector=f"{podspec.COMPONENT_LABEL} in (sandbox,{PLACEHOLDER})"
                )
            ).items
            arrived, running = {}, {}
            for pod in pods:
                if pod.metadata.deletion_timestamp or pod.status.phase not in ("Pending", "Running"):
                    continue
                course_id = (pod.metadata.labels or {}).get(podspec.COURSE_LABEL)
                if pod.metadata.labels.get(podspec.COMPONENT_LABEL) == "sandbox":
                    arrived[course_id] = arrived.get(course_id, 0) + 1
                elif pod.status.phase == "Running":
                    running[f"placeholder-{pod.metadata.name}"] = course_id
            images = load_images(self.images_dir)
            for course in self.courses.catalog.courses.values():
                sessions = getattr(course, "sessions", ())
                count = wanted(sessions, now, self.lead, self.keep, arrived.get(course.id, 0))
                opened = wanted(sessions, now, self.lead, self.keep) > 0
                if opened and not await self._can_pay(course):
                    count = 0
                if opened:
                    body = placeholder_replicaset(
                        self.cluster,
                        course.summary(),
                        images.get(course.sandbox.image),
                        count,
                        scheduler_name=self.scheduler_name or None,
                    )
                    await apps.patch_namespaced_replica_set(
                        body["metadata"]["name"],
                        self.namespace,
                        body,
                        field_manager=FIELD_MANAGER,
                        force=True,
                        _content_type="application/apply-patch+yaml",
                    )
                    self.known.add(course.id)
                elif course.id in have:
                    await apps.delete_namespaced_replica_set(
                        replicaset_name(course.id), self.namespace, propagation_policy="Background"
                    )
                    self.known.discard(course.id)
                    log.info("Placeholders of %s removed: its session window closed", course.id)
        await self._charge(running)

    async def _can_pay(self, course):
        """Whether the course's allocation and budget would admit one more warm session (checked, not held)."""
        if course.sandbox.gpu is None:
            return True
        try:
            await self.db.run(_check, course, self.first_uid)
            return True
        except Refusal as refusal:
            log.warning("No placeholders for %s: %s", course.id, refusal.message)
            return False

    async def _charge(self, running):
        """Open a warm session for each placeholder that runs now, settle those that went."""
        for server in sorted(set(self.charged) - set(running)):
            self.admission.warm_running.discard((WARM_USER, server))
            await self.db.run(metering.release, WARM_USER, server, "placeholder ended")
            self.charged.pop(server)
        for server, course_id in sorted(running.items()):
            course = self.courses.get(course_id)
            if server in self.charged or course is None:
                continue
            try:
                await self.db.run(_open, course, server, self.first_uid)
            except Refusal as refusal:
                log.warning("Placeholder %s of %s is not paid for: %s", server, course_id, refusal.message)
                continue
            self.charged[server] = course_id
            self.admission.warm_running.add((WARM_USER, server))


def _open(s, course, server, first_uid):
    return ledger_admission.admit(s, course, WARM_USER, server, None, first_uid, learner_quota=False)


def _check(s, course, first_uid):
    """Admission's limits for one more warm session, rolled back (nothing is held)."""
    savepoint = s.begin_nested()
    try:
        ledger_admission.admit(s, course, WARM_USER, "placeholder-check", None, first_uid, learner_quota=False)
    finally:
        savepoint.rollback()
