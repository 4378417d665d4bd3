"""The autograding queue: jobs in the service's database, a slot per worker process, each job graded
in isolation (a sandboxed kernel here, or a Kubernetes Job per notebook) with its limits.

:class:`GradingQueue` is handed what it needs: the settings (:mod:`.settings`: ``workers``, the timeouts and
limits, ``backend``, the ``kube_*`` settings; the cluster's in :class:`aifhub.kube.settings.KubeSettings`), the
course set-up (:mod:`.courses`) and a :class:`GpuBroker` (the service's admission) for GPU courses' jobs.
"""

import asyncio
import logging
import os
import shutil
from pathlib import Path
from typing import Protocol

from sqlalchemy import select

from ..catalog import load_images
from ..catalog.model import parse_memory
from ..kube.client import delete_jobs
from ..kube.grading_job import JobSettings, grading_job, safe_name
from ..errors import Refusal
from ..isolation.namespace import gpu_node_names
from ..ledger.models import utcnow
from ..kube import podspec
from .runners import jobgroup, mounts
from .coursedir import GradingDir
from .models import GradingJob
from .failures import scrub
from .runners.worker import failure_lines
from .workers import WorkerDied, WorkerProcess, kill_grading_uid

log = logging.getLogger(__name__)


class GpuBroker(Protocol):
    """What the queue asks of the service's admission: GPU time for one job of a GPU course, and its end."""

    async def admit_grading(self, course_id, job_id, expected_s, cluster=False):
        """The devices for the job (``[]``: none needed, or the cluster places them); Refusal ``gpu-busy`` when
        every GPU is taken (the job waits), another Refusal when the course may not have one."""

    async def release_grading(self, job_id):
        """The job's GPU time ends (its ledger session is closed)."""


class GradingQueue:
    """Claims queued jobs and grades them, as many at once as there are workers."""

    def __init__(self, settings, db, courses, kube, gpus=None):
        """``settings``: the :class:`~.settings.GradingSettings`, read at each job; ``courses``: the
        :class:`~.courses.CourseSetup` (directories, gradebooks, learners' ids, sharing); ``kube``: the cluster's
        :class:`~aifhub.kube.settings.KubeSettings`; ``gpus``: what hands out GPUs to GPU courses' jobs
        (:class:`GpuBroker`, the service's admission; None: no course gets one)."""
        self.settings = settings
        self.db = db
        self.courses = courses
        self.kube = kube
        self.gpus = gpus
        self.pool = []
        self._tasks = []
        self._wake = asyncio.Event()

    def wake(self):
        """New jobs are queued: a free slot takes one now instead of at its next look."""
        self._wake.set()

    @staticmethod
    def _recover(s):
        """Jobs left running by a previous service run go back to the queue; returns their ids."""
        jobs = list(s.scalars(select(GradingJob).where(GradingJob.state == "running")))
        for job in jobs:
            job.state = "queued"
            job.detail = "requeued: the service restarted while it ran"
        return [job.id for job in jobs]

    async def _delete_orphans(self, job_ids):
        """The Kubernetes Jobs that a previous service run left behind for jobs now requeued."""
        for job_id in job_ids:
            try:
                await delete_jobs(self.kube.namespace, self.kube.kube_config, job_id)
            except Exception as exc:
                log.warning("Could not delete the Kubernetes Jobs of requeued grading job %s: %s", job_id, exc)

    @staticmethod
    def _claim_next(s):
        q = select(GradingJob).where(GradingJob.state == "queued").order_by(GradingJob.id).limit(1)
        if s.get_bind().dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        job = s.scalar(q)
        if job is None:
            return None
        job.state, job.started_at, job.attempts = "running", utcnow(), job.attempts + 1
        return job.to_dict()

    @staticmethod
    def _record(s, job_id, fields):
        job = s.get(GradingJob, job_id)
        for key, value in fields.items():
            setattr(job, key, value)
        if fields.get("state") in ("done", "failed"):
            job.finished_at = utcnow()

    async def _claim(self):
        return await self.db.run(self._claim_next)

    async def _finish(self, job_id, **fields):
        await self.db.run(self._record, job_id, fields)

    def limits(self):
        return self.settings.limits()

    async def job_request(self, job, devices=()):
        job["grading_id"] = await self.courses.student_id(job["student_id"])  # nbgrader's id of the hub user
        base = await self.courses.base_request(job["course_id"]) | {
            "op": "autograde",
            "assignment": job["assignment_id"],
            "student": job["grading_id"],
            "scratch": str(
                self.settings.scratch / f"job-{job['id']}-{job['attempts']}"
            ),  # a new folder for each attempt
        }
        if self.settings.backend == "kubernetes":
            return base | {"kubernetes": await asyncio.to_thread(self.kube_request, job)}
        uid = self.settings.first_uid + job["id"] % self.settings.uid_count if self.settings.isolated else None
        return base | {
            "uid": uid,
            "limits": self.limits(),
            "network": self.settings.network,
            "scratch_bytes": parse_memory(self.settings.scratch_size),
            "env": {"CUDA_VISIBLE_DEVICES": ",".join(d["id"] for d in devices), "AIFHUB_COURSE": job["course_id"]},
            "devices": gpu_node_names(
                int(d.get("minor", d["id"])) for d in devices
            ),  # the only device nodes of the machine's its kernels may open
        }

    def kube_request(self, job):
        """What the worker needs to run a job's notebooks as Kubernetes Jobs: the Job manifest and where."""
        course = self.courses.course(job["course_id"])
        images = load_images(self.courses.images_dir)
        try:
            settings = JobSettings(
                namespace=self.kube.namespace,
                registry=self.kube.registry,
                pools=self.kube.gpu_pools,
                claim=self.settings.kube_claim,
                cpu=self.settings.kube_cpu,
                memory=str(parse_memory(self.settings.memory_limit)),
            )
            manifest = grading_job(
                settings,
                course.summary(),
                images.get(course.sandbox.image),
                job["assignment_id"],
                job["grading_id"],
                name=safe_name("aifhub-grade", str(job["id"]), str(job["attempts"]), job["course_id"], limit=50),
                job_id=job["id"],
            )
        except podspec.PodSpecError as exc:
            raise Refusal("not-runnable", str(exc))
        return {
            "job": manifest,
            "namespace": self.kube.namespace,
            "kube_config": self.kube.kube_config,
            "volume_root": str(self.settings.kube_volume),
            "notebook_timeout": self.settings.notebook_timeout,
            "start_timeout": self.settings.kube_start_timeout,
        }

    def call_timeout(self, job):
        """How long the worker may take for one submission before it is stopped."""
        if self.settings.backend != "kubernetes":
            return self.settings.notebook_timeout
        # each notebook's pod may wait for a node (and its image) first
        submitted = GradingDir(self.settings.root, job["course_id"]).step(
            "submitted", job["grading_id"], job["assignment_id"]
        )
        notebooks = max(1, len(list(submitted.glob("*.ipynb"))))
        return self.settings.notebook_timeout + notebooks * (self.settings.kube_start_timeout + 60)

    def _describe(self, answer):
        notes = answer.get("notes") or {}
        texts = []
        if notes.get("cell-timeout"):
            texts.append(
                f"a cell ran past the {self.settings.cell_timeout} s per-cell limit and was interrupted "
                f"({', '.join(notes['cell-timeout'])})"
            )
        if notes.get("out-of-memory"):
            texts.append(
                f"a cell hit the memory limit ({self.settings.memory_limit}) and was stopped "
                f"({', '.join(notes['out-of-memory'])})"
            )
        reason = (
            "out-of-memory" if notes.get("out-of-memory") else "cell-timeout" if notes.get("cell-timeout") else None
        )
        return reason, texts

    async def _claim_gpus(self, job):
        """Devices for a GPU course's submission, or None when the job went back to the queue or failed."""
        if self.gpus is None:
            return []
        try:
            return await self.gpus.admit_grading(
                job["course_id"],
                job["id"],
                self.settings.notebook_timeout,
                cluster=self.settings.backend == "kubernetes",
            )
        except Refusal as refusal:
            if refusal.reason == "gpu-busy":  # wait for a device, without using up an attempt
                await self._finish(
                    job["id"], state="queued", attempts=job["attempts"] - 1, detail="waiting for a free GPU"
                )
                await asyncio.sleep(self.settings.gpu_wait)
            else:
                await self._finish(job["id"], state="failed", reason="no-gpu", detail=refusal.message)
            return None

    async def _run_job(self, worker, job):
        course = self.courses.find(job["course_id"])
        charged = (
            self.gpus is not None and course is not None and course.sandbox.gpu is not None
        )  # a GPU course's grading is a ledger session
        devices = await self._claim_gpus(job)
        if devices is None:
            return
        try:
            await self._grade(worker, job, devices)
        finally:
            if charged:  # its GPU time (local devices, or the cluster's) ends with the job
                await self.gpus.release_grading(job["id"])

    async def _grade(self, worker, job, devices):
        request = await self.job_request(job, devices)
        started = asyncio.get_running_loop().time()
        try:
            answer = await worker.call(request, timeout=self.call_timeout(job))
        except asyncio.TimeoutError:
            await self._cleanup(job, request)
            await self._finish(
                job["id"],
                state="failed",
                reason="timeout",
                detail=f"grading took longer than the {self.settings.notebook_timeout} s limit for a whole submission "
                "and was stopped",
            )
            return
        except WorkerDied as exc:
            await self._cleanup(job, request)
            if job["attempts"] < self.settings.max_attempts:
                await self._finish(job["id"], state="queued", detail=f"retrying: {exc}")
            else:
                await self._finish(job["id"], state="failed", reason="error", detail=str(exc))
            return
        took = asyncio.get_running_loop().time() - started
        await asyncio.to_thread(self.courses.share, job["course_id"])
        reason, texts = self._describe(answer)
        if answer.get("ok"):
            detail = f"graded in {took:.1f} s" + ("; " + "; ".join(texts) if texts else "")
            await self._finish(
                job["id"],
                state="done",
                score=answer.get("score"),
                max_score=answer.get("max_score"),
                reason=reason,
                detail=detail,
            )
        else:
            why = answer.get("reason") or "error"
            error = answer.get("error") or ""
            said = [scrub(line) for line in answer.get("said") or failure_lines(error)]  # no server paths shown
            await self._finish(
                job["id"],
                state="failed",
                reason=why,
                detail=self._failure(why, error)
                + ("; " + "; ".join(texts) if texts else "")
                + (": " + " | ".join(said) if said else ""),
            )
        log.info(
            "Grading job %s (%s/%s/%s): %s",
            job["id"],
            job["course_id"],
            job["assignment_id"],
            job["student_id"],
            "done" if answer.get("ok") else f"failed ({answer.get('reason')})",
        )

    def _failure(self, why, error):
        """What a failed job's reason means, with the limit that applied."""
        kube = self.settings.backend == "kubernetes"
        if why == "kernel-died":
            limits = (
                f"at the grading pod's memory limit of {self.settings.memory_limit}"
                if kube
                else f"at the CPU-time limit of {self.limits()['cpu_seconds']} s or the memory limit of {self.settings.memory_limit}"
            )
            return f"the kernel died while grading (killed {limits}, or it crashed)"
        if why == "timeout" and (
            "Timeout waiting for the notebook" in error or "Timeout waiting for the grading pod" in error
        ):
            return f"grading took longer than the {self.settings.notebook_timeout} s limit for a whole submission and was stopped"
        if why == "timeout":
            return f"a cell ran past the {self.settings.cell_timeout} s per-cell limit and the kernel did not stop when interrupted"
        if why == "out-of-memory":
            return f"the kernel ran out of memory (limit {self.settings.memory_limit}) and died"
        return "nbgrader could not grade it"

    async def _cleanup(self, job, request):
        """After a worker was stopped under a job: its Kubernetes Jobs, or its kernel's processes, and its files."""
        if request.get("kubernetes"):
            try:
                await delete_jobs(self.kube.namespace, self.kube.kube_config, job["id"])
            except Exception as exc:  # the Jobs end at their deadline anyway
                log.warning("Could not delete the Kubernetes Jobs of grading job %s: %s", job["id"], exc)
        await asyncio.to_thread(self._cleanup_local, request)

    def _cleanup_local(self, request):
        kill_grading_uid(request.get("uid"))
        scratch = Path(request["scratch"])
        if request.get("uid") is not None:
            jobgroup.remove(scratch)  # the worker died before it removed the job's cgroup
            mounts.release_scratch(scratch)  # and before it unmounted the job's tmpfs
        pidfile = scratch / "kernel.pid"
        if request.get("uid") is None and pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), 9)
            except (OSError, ValueError):
                pass
        shutil.rmtree(scratch, ignore_errors=True)

    async def _slot(self, worker):
        while True:
            try:
                job = await self._claim()
            except Exception:
                log.exception("Claiming a grading job failed")
                job = None
            if job is None:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), 2.0)
                except asyncio.TimeoutError:
                    pass
                continue
            self._wake.set()  # more may be waiting: let the other slots look too
            try:
                await self._run_job(worker, job)
            except Refusal as exc:  # e.g. the course's gradebook cannot be set up
                log.error("Grading job %s failed: %s", job["id"], exc.message)
                await self._finish(job["id"], state="failed", reason="error", detail=exc.message)
            except Exception as exc:
                log.exception("Grading job %s failed", job["id"])
                await self._finish(job["id"], state="failed", reason="error", detail=f"{type(exc).__name__}: {exc}")

    async def start(self):
        m, kube = self.settings, self.kube
        await asyncio.to_thread(m.scratch.mkdir, mode=0o711, parents=True, exist_ok=True)
        await asyncio.to_thread(m.scratch.chmod, 0o711)
        if m.isolated and m.backend == "local" and os.geteuid() == 0:  # jobs' tmpfs left by a crash
            for point in await asyncio.to_thread(mounts.mount_points_below, m.scratch):
                if point != str(m.scratch):
                    await asyncio.to_thread(mounts.umount, point)
                    log.info("Unmounted %s, left by an earlier run", point)
        requeued = await self.db.run(self._recover)
        if requeued and m.backend == "kubernetes":
            self._tasks.append(asyncio.ensure_future(self._delete_orphans(requeued)))
        self.pool = [WorkerProcess(f"grader-{i}", m.root / ".workers" / f"grader-{i}") for i in range(m.worker_count)]
        self._tasks += [asyncio.ensure_future(self._slot(w)) for w in self.pool]
        if m.backend == "kubernetes":
            log.info(
                "Grading queue: %d worker(s); notebooks run as Kubernetes Jobs in namespace %s (volume %s at %s)",
                len(self.pool),
                kube.namespace,
                m.kube_claim,
                m.scratch,
            )
            return
        log.info(
            "Grading queue: %d worker(s); kernels %s, network %s",
            len(self.pool),
            "under their own uids" if m.isolated else "under the service's uid (not root)",
            m.network,
        )
        if m.network == "none":
            log.warning(
                "Graded kernels keep the network: this machine gives them no network namespace (util-linux's "
                "unshare is missing%s)",
                "" if os.geteuid() == 0 else ", or user namespaces are disabled",
            )

    async def stop(self):
        for task in self._tasks:
            task.cancel()
        for w in self.pool:
            await w.kill()
