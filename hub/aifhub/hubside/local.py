"""The embedded default spawner: one local process per learner and course.

As root, each learner's sandbox runs under its own unprivileged uid with a
private work folder; otherwise sandboxes run as the hub's user, and the hub
says plainly that they are not isolated.
"""

import asyncio
import os
from pathlib import Path

from subprocess import SubprocessError

from jupyterhub.spawner import LocalProcessSpawner, SpawnException
from jupyterhub.utils import random_port
from traitlets import Bool, Integer, Unicode, default, validate

from .. import fsafe
from ..catalog.materials import PRIVATE_COURSE_ENTRIES  # noqa: F401 (the rule's home; named here for old imports)
from ..catalog.materials import is_private as _private
from ..isolation.homes import HASHED, home_folder_name  # noqa: F401 (their home; named here for old imports)
from ..sandboxside.nbgrader_config import sandbox_env
from .loopwatch import ensure_watching
from .hardlimits import HardLimitsMixin
from .mixin import CourseSpawnerMixin
from .startqueue import start_queue


def copy_materials(materials, work, uid=None):
    """Copy course materials into the open work folder ``work`` (a :class:`fsafe.Dir`) without
    overwriting the learner's files.

    This runs as root in a folder the learner owns: nothing there is followed (a link or FIFO
    where a material belongs is left as it is, with a log line), files are only ever created
    new and handed to the learner through their descriptors (see :mod:`aifhub.fsafe`).
    """
    with fsafe.opened(materials) as src:
        return fsafe.copy_tree(src, work, skip=_private, existing="keep", uid=uid, gid=uid, dir_mode=0o700)


def prepare_work_folder(home, work, materials, uid=None):
    """Create ``home`` and ``home/<course>`` for the learner, private to them, and seed materials.

    The folder above the homes can be traversed by everyone but not listed. The learner owns
    their home, so its course folder is reached without following links: a link or a file in its
    place is moved aside (never followed) and a real folder made.
    """
    home, work = Path(home), Path(work)
    if work.parent != home:
        raise ValueError(f"the work folder {work} is not inside the home {home}")
    home.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
    with fsafe.opened(home.parent) as top:
        fsafe.own(top.fd, top.stat(), mode=0o711)
        with top.ensure(home.name, 0o700, uid, uid) as h, h.ensure(work.name, 0o700, uid, uid) as w:
            copy_materials(materials, w, uid)


class LocalSandboxSpawner(HardLimitsMixin, CourseSpawnerMixin, LocalProcessSpawner):
    """Start a course sandbox as a local process (the embedded default, ``aifhub-local``)."""

    work_root = Unicode(
        help="Directory holding every learner's home: <work_root>/<user>/<course>/ is the course work folder.",
    ).tag(config=True)
    isolated = Bool(
        help="Run each learner's sandbox under its own unprivileged uid. Default: True when the hub runs as root.",
    ).tag(config=True)

    takes_warm = Bool(
        True,
        help="Take a warm sandbox of the course when the service has one ready (a scheduled session's); "
        "False always starts sandboxes cold.",
    ).tag(config=True)
    max_starting = Integer(
        help="Sandboxes that boot at once; the others wait their turn, told their place in the queue. "
        "Default: one more than the machine's cores (booting is mostly Python imports on a core).",
    ).tag(config=True)

    # A stop is bounded (HardLimitsMixin.stop_process): the GPU stays claimed, and charged, until the sandbox is
    # gone. JupyterLab exits within a second of SIGINT or SIGTERM (both shut it down in order); JupyterHub's 30 s
    # waits only kept a hung one.
    @default("interrupt_timeout")
    def _interrupt_timeout_default(self):
        return 1

    @default("term_timeout")
    def _term_timeout_default(self):
        return 2

    @default("kill_timeout")
    def _kill_timeout_default(self):
        return 1

    @default("max_starting")
    def _max_starting_default(self):
        return (os.cpu_count() or 1) + 1

    @validate("max_starting")
    def _validate_max_starting(self, proposal):
        if proposal.value < 1:
            raise ValueError(f"max_starting must be at least 1, got {proposal.value}")
        return proposal.value

    @default("work_root")
    def _work_root_default(self):
        return str(Path(os.environ.get("AIFHUB_STATE_DIR", ".aifhub")).resolve() / "work")

    @default("isolated")
    def _isolated_default(self):
        return os.geteuid() == 0

    @property
    def home(self):
        return Path(self.work_root) / home_folder_name(self.user.name)

    def get_state(self):
        state = super().get_state()
        if getattr(self, "admission", None):
            state["aifhub"] = {k: self.admission[k] for k in ("session_id", "uid", "devices")} | {
                "course": self.admission["course"]["id"],
                "limits": self.limits_state(),
            }
        return state

    def load_state(self, state):
        super().load_state(state)
        if "aifhub" in state:
            saved = state["aifhub"]
            self.admission = {
                "session_id": saved["session_id"],
                "uid": saved["uid"],
                "devices": saved["devices"],
                "course": {"id": saved["course"]},
            }
            self.load_limits_state(saved.get("limits") or {})

    def clear_state(self):
        super().clear_state()
        self.admission = None

    def make_preexec_fn(self, name):
        uid = self.admission["uid"] if self.isolated else None
        cwd = str(self.home / self.admission["course"]["id"])
        # instructors: their course's grading group (formgrader), which the service allocated
        groups = self._extra_groups()

        def preexec():
            if uid is not None:
                os.setgroups(groups)
                os.setgid(uid)
                os.setuid(uid)
            os.umask(0o077)
            os.chdir(cwd)

        return preexec

    def user_env(self, env):
        env["USER"] = self.user.name
        env["HOME"] = str(self.home)
        env["SHELL"] = "/bin/bash"
        return env

    def get_env(self):
        env = super().get_env()
        admission = self.admission
        env["AIFHUB_COURSE"] = admission["course"]["id"]
        env.update(self.gpu_env(admission["devices"]))
        # nbgrader in the sandbox uses aifhub's exchange (HTTP to the service, with this sandbox's token)
        env.update(
            sandbox_env(
                Path(self.work_root).parent,
                self.service_url,
                self.home / env["AIFHUB_COURSE"],
                env,
                instructor_of=env["AIFHUB_COURSE"] if self._teaches() else None,
            )
        )
        return env

    def _extra_groups(self):
        """Instructors: their course's grading group (formgrader), which the service allocated."""
        gid = self.admission.get("grading_gid") if self._teaches() else None
        return [gid] if gid else []

    def _teaches(self):
        return (self.admission or {}).get("role") in ("instructor", "admin")

    async def start(self):
        ensure_watching(logger=self.log)  # the hub's event loop, watched from the first spawn on
        if not self.isolated:
            self.log.warning(
                "The hub does not run as root: %s's sandbox is NOT isolated from other learners.", self.user.name
            )
        admission = await self.admit()
        course_id = admission["course"]["id"]
        try:
            uid = admission["uid"] if self.isolated else None
            self.emit(40, "Preparing your work folder")
            try:
                await asyncio.to_thread(
                    prepare_work_folder, self.home, self.home / course_id, admission["materials"], uid
                )
            except fsafe.UnsafePath as exc:
                raise SpawnException(
                    f"Your work folder could not be prepared: {exc}. An administrator can find details in the hub log.",
                    reason="work-folder",
                    status_code=409,
                ) from exc
            self.notebook_dir = str(self.home / course_id)
            ip_port = await self._take_warm(admission, uid) if admission.get("warm") else None
            if ip_port is None:
                await self.prepare_limits(admission, uid)
                async with start_queue(self.max_starting).slot(self._report_queue, every=3.0):
                    ip_port = await self._boot(uid)
        except BaseException:
            await self.remove_limits()
            await self.release("start failed")
            raise
        return ip_port

    async def _take_warm(self, admission, uid):
        """Hand the warm sandbox that admission gave us to this learner; None to start cold instead."""
        self.emit(50, "A sandbox was started ahead of this session: handing it to you")
        if self.port == 0:
            self.port = random_port()
        env = self.get_env()
        assignment = {
            "uid": uid,
            "gid": uid,
            "groups": self._extra_groups(),
            "cwd": str(self.home / admission["course"]["id"]),
            "env": env,
            "argv": [*self.cmd, *self.get_args()],
        }
        try:
            handed = await self.service.hand_over(admission["warm"], assignment)
        except SpawnException as exc:
            self.log.warning(
                "%s: the warm sandbox could not be handed over (%s); starting cold",
                self._log_name,
                exc.log_message or exc,
            )
            return None
        self.pid, self.proc, self.confined = handed["pid"], None, True
        self.cgroup = await asyncio.to_thread(self._group_at, handed["cgroup"])
        self.oom_seen = await asyncio.to_thread(self.cgroup.oom_kills) if self.cgroup else 0
        ip_port = (self.ip or "127.0.0.1", self.port)
        await self._wait_until_listening(*ip_port)
        return ip_port

    def _report_queue(self, place, booting):
        """Progress while waiting for a boot slot: when the place changes, and every 15 s regardless."""
        now = asyncio.get_running_loop().time()
        last = getattr(self, "_queue_note", (None, 0.0))
        if place != last[0] or now - last[1] >= 15:
            self._queue_note = (place, now)
            self.emit(
                48,
                f"Waiting to boot: {place - 1} ahead of you in the queue, {booting} sandboxes booting "
                "(a few start at once so that each is quick)",
            )

    async def _boot(self, uid):
        note = "" if self.isolated else " (not isolated: the hub does not run as root)"
        self.emit(50, f"Sandbox starting{note}")
        try:
            ip_port = await self.launch(uid, self._extra_groups())
        except (OSError, SubprocessError) as exc:
            raise SpawnException(
                f"The sandbox process could not be started ({exc}). An administrator can find details in the hub log.",
                reason="process-start",
                status_code=500,
            ) from exc
        await self._wait_until_listening(*ip_port)
        return ip_port

    async def _wait_until_listening(self, ip, port):
        """Wait for the sandbox to listen, so the hub's first check finds it ready; report progress meanwhile.

        A sandbox that exits during start-up fails the spawn with its exit code, instead of the hub's
        generic error, and so does one that does not answer within ``http_timeout``.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        next_note = started + 2
        self.emit(60, "Sandbox process started; JupyterLab is loading")
        self.loading = True  # a stop now skips SIGINT, which JupyterLab does not handle yet
        while loop.time() - started < self.http_timeout:
            code = self.proc.poll() if self.proc is not None else (None if await self._signal(0) else "?")
            if code is not None:
                raise SpawnException(
                    f"The sandbox exited during start-up (exit code {code}). An administrator can find its output in the hub log.",
                    reason="sandbox-exited",
                    status_code=500,
                )
            try:
                _, writer = await asyncio.open_connection(ip, port)
            except OSError:
                if loop.time() >= next_note:
                    self.emit(70, f"JupyterLab is loading ({loop.time() - started:.0f} s)")
                    next_note += 5
                await asyncio.sleep(0.1)
                continue
            writer.close()
            self.loading = False  # from now on a stop begins with SIGINT, which JupyterLab handles
            self.emit(90, "JupyterLab is up; connecting you")
            return
        raise SpawnException(
            f"The sandbox did not answer within {self.http_timeout:.0f} s of starting. An administrator can find its "
            "output in the hub log.",
            reason="boot-timeout",
            status_code=500,
        )

    async def poll(self):
        course = ((self.admission or {}).get("course") or {}).get("id")
        status = await super().poll()
        if await self.memory_kills() and course:
            await self.tell("memory", course)
        return status

    async def stop(self, now=False):
        course = ((self.admission or {}).get("course") or {}).get("id")
        await self.stop_process(now=now)  # bounded: see HardLimitsMixin.stop_process
        killed = await self.memory_kills()
        await self.remove_limits()
        if killed and course:
            await self.tell("memory", course)
        await self.release("stopped")
        self.admission = None
