"""The Slurm spawner (``aifhub-slurm``): a course's sandbox is one Slurm job, charged to the course's account.

The spawn: admission by the aifhub service (as for every spawner; nothing charged while the job pends), the
learner's site account (the Unix account Slurm knows), a batch job submitted *as that account* with the
course's account, GPUs (``--gres``), CPUs, memory, time limit (``max_session``), partition, QOS, reservation
and constraint, tagged with ``--comment``. While it pends, the progress says why in words and when Slurm
expects it to start; once it runs, the service starts charging; the job reports its server's address to the
hub (address.py) and the hub connects. A job that ends before its server answers ends the spawn with Slurm's
reason. Stop cancels the job, pending or running. The job id is kept in the hub's state, so a restarted hub
adopts running jobs and cancels none.
"""

import asyncio
import os
import pwd
import sys
import time

from jupyterhub.spawner import SpawnException, Spawner
from traitlets import Bool, Dict, Float, Integer, Unicode, default, validate

from ...slurmacct.reservations import current as current_reservation
from ..mixin import CourseSpawnerMixin
from . import jobspec
from .jobspec import JOB_TAG
from .rest import CliBackend, RestBackend, SlurmRefused, SlurmUnavailable

RUNNING = {"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT"}


class SlurmSpawner(CourseSpawnerMixin, Spawner):
    """Start a course sandbox as a Slurm batch job (``aifhub-slurm``; docs/slurm.md)."""

    backend = Unicode(
        "rest",
        help="How the hub talks to Slurm: 'rest' (slurmrestd, JWT-authenticated; the default) or 'cli' "
        "(sbatch, squeue and scancel run as the learner's site account).",
    ).tag(config=True)
    rest_url = Unicode(help="slurmrestd's URL, e.g. http://slurm-rest:6820. Default: $AIFHUB_SLURM_REST_URL.").tag(
        config=True
    )
    jwt_key_file = Unicode(
        help="The cluster's JWT key (slurm.conf AuthAltParameters=jwt_key=...), readable by the hub only: tokens "
        "naming the learner's site account are signed with it. Default: $AIFHUB_SLURM_JWT_KEY."
    ).tag(config=True)
    slurm_conf = Unicode(help="slurm.conf for the 'cli' backend ($SLURM_CONF). Default: $SLURM_CONF.").tag(config=True)
    partition = Unicode(
        help="Partition of courses that name none in course.yaml (slurm.partition). Default: $AIFHUB_SLURM_PARTITION "
        "or the cluster's default partition."
    ).tag(config=True)
    gpu_types = Dict(
        help="Course GPU kind -> Slurm GRES type (gpu_kinds name -> e.g. 'h100'); a kind not listed is used as the "
        "type itself, except 'gpu' (any type)."
    ).tag(config=True)
    default_time = Unicode("4h", help="Time limit of courses without sandbox.max_session, e.g. 4h or 90m.").tag(
        config=True
    )
    site_accounts = Dict(
        help="Hub user -> Unix account on the cluster, for users listed here. Others: site_account_template."
    ).tag(config=True)
    site_account_template = Unicode(
        "",
        help="Unix account of a hub user, e.g. '{username}' (the same name on the cluster). Empty (the default): "
        "the account whose uid is the learner's per-learner uid that aifhub's admission hands out.",
    ).tag(config=True)
    work_root = Unicode(
        "{home}/aifhub",
        help="Folder of the learner's work folders on the cluster, as the job sees it ({home}: the site account's "
        "home; {user}: its name); the course's folder is made in it by the job, as the learner.",
    ).tag(config=True)
    job_python = Unicode(help="Python with aifhub on the compute nodes. Default: the hub's own.").tag(config=True)
    job_host = Unicode(
        help="Address the job reports for its server (the hub must reach it). Default: $AIFHUB_SLURM_HOST, else the "
        "node's host name."
    ).tag(config=True)
    job_bind = Unicode("0.0.0.0", help="Address the server binds to on the node.").tag(config=True)
    job_output = Unicode("/dev/null", help="The job's output file (sbatch --output; %j is the job id).").tag(
        config=True
    )
    poll_interval = Float(1.0, help="Seconds between looks at a starting job (pending reason, start estimate).").tag(
        config=True
    )
    session_reservations = Bool(
        False,
        help="Send a learner's job into the reservation of the course's session running now (made ahead by "
        "`aifhub slurm sync --reservations`), unless course.yaml names its own slurm.reservation.",
    ).tag(config=True)
    default_memory_mb = Integer(
        2048, help="Memory (MB) of courses without sandbox.memory: Slurm would give a job the whole node."
    ).tag(config=True)

    @default("rest_url")
    def _rest_url_default(self):
        return os.environ.get("AIFHUB_SLURM_REST_URL", "")

    @default("jwt_key_file")
    def _jwt_key_default(self):
        return os.environ.get("AIFHUB_SLURM_JWT_KEY", "")

    @default("slurm_conf")
    def _slurm_conf_default(self):
        return os.environ.get("SLURM_CONF", "")

    @default("partition")
    def _partition_default(self):
        return os.environ.get("AIFHUB_SLURM_PARTITION", "")

    @default("job_python")
    def _job_python_default(self):
        return sys.executable

    @default("job_host")
    def _job_host_default(self):
        return os.environ.get("AIFHUB_SLURM_HOST", "")

    @validate("backend")
    def _validate_backend(self, proposal):
        if proposal.value not in ("rest", "cli"):
            raise ValueError(f"SlurmSpawner.backend {proposal.value!r}: expected 'rest' or 'cli'")
        return proposal.value

    @validate("default_time")
    def _validate_time(self, proposal):
        jobspec.time_limit_min(proposal.value, 1)  # raises ValueError with what is expected
        return proposal.value

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.job_id = None
        self.site_user = None
        self.address = None
        self.admission = None
        self.slurm_status = {}
        self._address_future = None

    @property
    def slurm(self):
        """The way to Slurm (made once per spawner: the REST backend reads the JWT key at its first call)."""
        if getattr(self, "_backend", None) is not None:
            return self._backend
        if self.backend == "cli":
            self._backend = CliBackend(env={"SLURM_CONF": self.slurm_conf} if self.slurm_conf else {})
            return self._backend
        if not self.rest_url or not self.jwt_key_file:
            raise SpawnException(
                "Slurm is not configured on this hub (no slurmrestd URL or JWT key); tell an administrator.",
                reason="slurm-config",
                status_code=503,
            )
        self._backend = RestBackend(self.rest_url, self.jwt_key_file)
        return self._backend

    # -- who runs the job -------------------------------------------------------------------------

    def site_account(self, admission):
        """The learner's Unix account on the cluster: (name, home)."""
        name = self.site_accounts.get(self.user.name)
        try:
            if name is None and self.site_account_template:
                name = self.site_account_template.format(username=self.user.name)
            pw = pwd.getpwnam(name) if name is not None else pwd.getpwuid(int(admission["uid"]))
        except (KeyError, TypeError, ValueError) as exc:
            who = name or f"uid {admission.get('uid')}"
            raise SpawnException(
                f"You have no account on the cluster yet ({who} is unknown there); an administrator creates it.",
                reason="slurm-no-site-account",
                status_code=409,
            ) from exc
        if pw.pw_uid == 0:
            raise SpawnException("Sandboxes never run as root.", reason="slurm-root", status_code=409)
        return pw.pw_name, pw.pw_dir

    # -- the address the job reports ---------------------------------------------------------------------

    def accept_address(self, host, port, job=None):
        """Called by the hub's address endpoint for this spawn's own token; True when taken."""
        future = self._address_future
        if future is None or future.done() or (job and str(job) != str(self.job_id)):
            return False
        future.set_result((host, port))
        return True

    # -- state -----------------------------------------------------------------------------------------

    def get_state(self):
        state = super().get_state()
        if self.job_id:
            state["slurm"] = {"job_id": self.job_id, "user": self.site_user, "address": self.address}
            if self.admission:
                state["aifhub"] = {
                    "session_id": self.admission.get("session_id"),
                    "course": self.admission["course"]["id"],
                }
        return state

    def load_state(self, state):
        super().load_state(state)
        saved = state.get("slurm") or {}
        if saved.get("job_id"):
            self.job_id, self.site_user = saved["job_id"], saved.get("user")
            self.address = tuple(saved["address"]) if saved.get("address") else None
        if "aifhub" in state:
            a = state["aifhub"]
            self.admission = {"session_id": a.get("session_id"), "devices": [], "course": {"id": a.get("course")}}

    def clear_state(self):
        super().clear_state()
        self.job_id = self.site_user = self.address = self.admission = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self):
        if self.job_id:  # a job of a spawn the hub lost (it restarted while the job pended): never two jobs
            await self._cancel()
            self.job_id = None
        admission = await self.admit(pending=True)  # charged once the job runs, not while it pends
        self.slurm_status = {}
        try:
            self.site_user, home = self.site_account(admission)
            course = admission["course"]
            work_root = self.work_root.format(home=home, user=self.site_user)
            work = os.path.join(work_root, course["id"])
            env = self.get_env() | {
                "AIFHUB_SLURM_WORK": work,
                "AIFHUB_SLURM_MATERIALS": admission.get("materials") or "",
                "AIFHUB_SLURM_BIND": self.job_bind,
                "HOME": home,
                "USER": self.site_user,
            }
            if self.job_host:
                env["AIFHUB_SLURM_HOST"] = self.job_host
            settings = {
                "partition": self.partition,
                "gpu_types": self.gpu_types,
                "default_time_min": jobspec.time_limit_min(self.default_time, 240),
                "default_memory_mb": self.default_memory_mb,
            }
            account = jobspec.slurm_account(course["id"])
            job = jobspec.job_properties(
                course, account, self.site_user, env, home, settings, admission.get("session_id")
            )
            job["standard_output"] = job["standard_error"] = self.job_output
            if self.session_reservations and "reservation" not in job:
                reservation = current_reservation(course.get("sessions"), course["id"])
                if reservation:
                    job["reservation"] = reservation
            self._address_future = asyncio.get_running_loop().create_future()
            script = jobspec.batch_script(self.job_python, self.cmd)
            try:
                self.job_id = await self.slurm.submit(self.site_user, script, job)
            except SlurmRefused as exc:
                hint = (
                    f" Your account on the cluster ({self.site_user}) is not in the course's Slurm account "
                    f"{account} yet: an administrator adds it with `aifhub slurm sync`."
                    if "Invalid account" in str(exc)
                    else ""
                )
                raise SpawnException(
                    f"Slurm refused the sandbox of {course['title']}: {exc}.{hint}",
                    reason="slurm-refused",
                    status_code=409,
                ) from exc
            except SlurmUnavailable as exc:
                raise SpawnException(
                    "The cluster's scheduler is not answering; try again in a few minutes.",
                    reason="slurm-unavailable",
                    status_code=503,
                    log_message=str(exc),
                ) from exc
            self.log.info("Slurm job %s for %s as %s: %s", self.job_id, self._log_name, self.site_user, job.get("gres"))
            where = job.get("gres", "CPU only").replace("gpu:", "GPU ")
            self.emit(40, f"Slurm job {self.job_id} submitted to account {account} ({where})")
            await self.save_state_soon()
            host, port = await self._wait_for_server(course)
        except BaseException:
            if self.job_id:
                await asyncio.shield(self._cancel())
            if self.slurm_status.get("state") == "PENDING":
                await asyncio.shield(self._tell_queue(admission["course"]["id"], None))
            await asyncio.shield(self.release("start failed"))
            raise
        finally:
            self._address_future = None
        self.address = (host, port)
        self.emit(90, f"JupyterLab starting on {host}:{port}")
        return host, port

    async def save_state_soon(self):
        """Have the hub write our state now (the job id), so a hub restart from here on adopts the job."""
        try:
            self.orm_spawner.state = self.get_state()
            self.db.commit()
        except Exception:  # noqa: BLE001 - the hub writes the state again when the spawn ends
            self.log.warning("Could not save the state of %s early", self._log_name, exc_info=True)

    async def _wait_for_server(self, course):
        said, marked, outage = None, False, 0
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            try:
                job = await self.slurm.job(self.site_user, self.job_id)
                outage = 0
            except (SlurmUnavailable, SlurmRefused) as exc:
                outage += 1
                if outage > 30:
                    raise SpawnException(
                        f"Lost contact with the cluster's scheduler while your sandbox started: {exc}",
                        reason="slurm-unavailable",
                        status_code=503,
                    ) from exc
                job = {"job_state": "UNKNOWN"}
            state = jobspec.job_state(job)
            if job is None or state in jobspec.ENDED:
                raise SpawnException(
                    f"Your sandbox's Slurm job {self.job_id} {jobspec.ended_words(job or {'job_state': 'ENDED'})} "
                    "before JupyterLab answered. Nothing more is charged; you can start again.",
                    reason="slurm-job-ended",
                    status_code=503,
                )
            if state == "PENDING":
                words = jobspec.pending_words(job.get("state_reason"))
                eta = jobspec.start_estimate(job.get("start_time"))
                self.slurm_status = {
                    "job_id": self.job_id,
                    "state": state,
                    "reason": job.get("state_reason"),
                    "words": words,
                    "start_estimate": job.get("start_time") or None,
                }
                note = f"Waiting in the cluster's queue: {words}" + (f"; {eta}" if eta else "")
                if note != said:
                    said = note
                    self.emit(45, note + ". Nothing is charged while you wait; Stop cancels the job.")
                    await self._tell_queue(course["id"], self.slurm_status)
            elif state in RUNNING and not marked:
                marked = True
                if said:
                    await self._tell_queue(course["id"], None)
                self.slurm_status = {"job_id": self.job_id, "state": state, "nodes": job.get("nodes")}
                await self._mark_running()
                self.emit(60, f"Running on {job.get('nodes') or 'a node'}; preparing your work folder")
            try:
                address = await asyncio.wait_for(asyncio.shield(self._address_future), self.poll_interval)
            except asyncio.TimeoutError:
                continue
            if not marked:  # the job started and its server answered within one poll: it runs
                if said:
                    await self._tell_queue(course["id"], None)
                await self._mark_running()
            return address
        raise SpawnException(
            f"Your sandbox's Slurm job {self.job_id} did not start within {self.start_timeout} s; it is cancelled.",
            reason="slurm-timeout",
            status_code=503,
        )

    async def _mark_running(self):
        """Tell the service the job runs: its session is charged from now, and names its job (Slurm's accounting
        of that job settles the charge, docs/slurm.md)."""
        try:
            await self.service.running(self.user.name, self.name, pod=f"{JOB_TAG}{self.job_id}")
        except SpawnException as exc:  # the service settles it at its next reconciliation
            self.log.warning("The service did not hear that job %s runs: %s", self.job_id, exc.log_message)

    async def _tell_queue(self, course_id, status):
        """Have ``GET /services/aifhub/api/v1/me`` show where the job waits (None: it no longer does)."""
        try:
            await self.service.queue_status(self.user.name, course_id, status)
        except SpawnException as exc:
            self.log.info("The service did not take the queue status of %s: %s", self._log_name, exc.log_message)

    async def _cancel(self):
        try:
            await self.slurm.cancel(self.site_user, self.job_id)
            self.log.info("Cancelled Slurm job %s of %s", self.job_id, self._log_name)
        except (SlurmUnavailable, SlurmRefused, SpawnException) as exc:
            self.log.warning("Could not cancel Slurm job %s of %s: %s", self.job_id, self._log_name, exc)

    async def poll(self):
        if not self.job_id:
            return 0
        try:
            job = await self.slurm.job(self.site_user, self.job_id)
        except (SlurmUnavailable, SlurmRefused) as exc:
            self.log.warning("Slurm did not say how job %s is (%s): taken as running", self.job_id, exc)
            return None  # never give up a running sandbox because the scheduler is slow to answer
        state = jobspec.job_state(job)
        if job is None or state in jobspec.ENDED:
            return 1
        return None  # pending, running, or in a state Slurm will leave (suspended, requeued)

    async def stop(self, now=False):
        if self.job_id:
            await self._cancel()
        await self.release("stopped")
        self.job_id = None
        self.slurm_status = {}
