"""Warm sandboxes for scheduled sessions (``course.yaml`` ``sessions: [{start, end, expected}]``).

From ``lead`` before a session starts until ``keep`` after (or its end), the service keeps ready as many
warm sandboxes of the course as learners are expected and have not come yet: each a process in the
course's cgroup and namespace (and GPU, for a GPU course) that has imported the Jupyter stack and waits
(:mod:`aifhub.isolation.warm_runner`). A learner's spawn takes one (:meth:`WarmPool.take` inside
admission), and the spawner hands it the learner's uid, folder and environment (:meth:`WarmPool.hand_over`):
the server is up in a fraction of a cold start. Until then the warm sandbox is a session of the course's
own (user ``aifhub-warm``, no learner quota): the course pays for warm time, learners pay from their start.
What is left unused when the window closes is stopped. A GPU somebody waits for in the waitlist is never
kept warm. A warm sandbox whose course's ``sandbox`` settings changed since it started (a GPU dropped,
other limits) is retired, never handed over: it was made for what the course was.

Until hand-over the runner is root in its namespace with only the capabilities it needs to become the
learner (``setuid``, ``setgid``: its bounding set holds nothing else), the course's file size limit
(``RLIMIT_FSIZE`` from ``sandbox.disk``) and a log of its own (:mod:`aifhub.isolation.sandbox_log`).
"""

import asyncio
import itertools
import json
import logging
import os
import resource
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from traitlets import Float, Integer, Unicode
from traitlets.config import LoggingConfigurable

from ..catalog.model import parse_memory
from ..isolation import namespace, sandbox_log
from ..isolation.cgroups import CgroupError, Cgroups, Limits, group_prefix
from ..isolation.warm_runner import READY
from ..ledger import admission as ledger_admission
from ..ledger import metering
from ..ledger.models import utcnow

log = logging.getLogger(__name__)
WARM_USER = "aifhub-warm"  # the ledger's user for warm time, paid by the course


@dataclass
class WarmSandbox:
    id: int
    course_id: str
    window: tuple  # (course id, session start): whose expected learners it serves
    server: str  # its session's server name in the ledger
    proc: object = None  # asyncio subprocess
    group: object = None  # SandboxGroup
    devices: list = field(default_factory=list)
    sandbox: object = None  # the course's SandboxRequest it was started for
    log_copier: object = None  # the process that copies its output into its log
    state: str = "booting"  # booting | ready | taken | handed | stopping


def plan(catalog, now, lead_s, keep_s, handed):
    """``{window: (course, wanted)}``: warm sandboxes wanted now per session window (``handed``: how many each
    window gave out already)."""
    out = {}
    for course in catalog.courses.values():
        for session in course.sessions:
            opens, closes = (
                session.start - timedelta(seconds=lead_s),
                min(session.end, session.start + timedelta(seconds=keep_s)),
            )
            if opens <= now < closes:
                window = (course.id, session.start.isoformat())
                out[window] = (course, max(0, session.expected - handed.get(window, 0)))
    return out


class WarmPool(LoggingConfigurable):
    """The service's warm sandboxes."""

    lead = Float(600.0, help="Seconds before a scheduled session when its warm sandboxes start.").tag(config=True)
    keep = Float(
        1800.0, help="Seconds after a session's start (at most its end) that unused warm sandboxes are kept."
    ).tag(config=True)
    max_warm = Integer(50, help="Warm sandboxes at once on this machine, whatever the sessions expect.").tag(
        config=True
    )
    interval = Float(15.0, help="Seconds between checks of the schedule.").tag(config=True)
    boot_timeout = Float(180.0, help="Seconds a warm sandbox may take to import the Jupyter stack.").tag(config=True)
    device_dir = Unicode("/dev", help="Where the GPU device nodes are (as LocalSandboxSpawner.device_dir).").tag(
        config=True
    )
    tmp_size = Unicode(
        "1G", help="Size of a warm sandbox's private /tmp and /dev/shm (as LocalSandboxSpawner.tmp_size)."
    ).tag(config=True)
    max_processes = Integer(512, help="Processes one sandbox may have (as LocalSandboxSpawner.max_processes).").tag(
        config=True
    )

    def __init__(self, db, courses, admission, state_dir, first_uid, **kw):
        super().__init__(**kw)
        self.db, self.courses, self.admission = db, courses, admission
        self.state_dir = Path(state_dir).resolve()
        self.work_root = self.state_dir / "work"
        self.first_uid = first_uid
        self.sandboxes = {}
        self.handed = {}  # window -> count
        self.handed_groups = {}  # (user, server) -> the cgroup of the warm sandbox handed to them (the idle rule reads it)
        self._ids = itertools.count(1)
        self._busy = asyncio.Lock()
        self.enabled, self.why_not = self._can_warm()
        self._reapers = set()

    def _can_warm(self):
        if os.geteuid() != 0:
            return False, "the service does not run as root"
        if not (namespace.bwrap_path() and namespace.setpriv_path()):
            return False, "bubblewrap is not installed"
        try:
            self.cgroups = Cgroups.detect()
            self.cgroups.prepare()
        except (CgroupError, OSError) as exc:
            return False, f"no cgroups ({exc})"
        return True, ""

    # -- the loop ---------------------------------------------------------------

    async def run(self):
        if not self.enabled:
            if any(c.sessions for c in self.courses.catalog.courses.values()):
                log.warning("Warm sandboxes are off: %s", self.why_not)
            return
        while True:
            try:
                await self.step()
            except Exception:
                log.exception("warm pool step failed")
            await asyncio.sleep(self.interval)

    async def step(self, now=None):
        """Start what the schedule wants, stop what it does not want any more."""
        async with self._busy:
            wanted = plan(self.courses.catalog, now or utcnow(), self.lead, self.keep, self.handed)
            waiting_kinds = await self._waiting_kinds()
            for w in [w for w in self.sandboxes.values() if w.state in ("booting", "ready")]:
                course, count = wanted.get(w.window, (None, 0))
                mine = [x for x in self.sandboxes.values() if x.window == w.window and x.state in ("booting", "ready")]
                if course is not None and course.sandbox != w.sandbox:
                    await self._stop(w, "its course changed")  # made for what the course was: retired
                elif course is None or len(mine) > count or (w.devices and course.sandbox.gpu.kind in waiting_kinds):
                    await self._stop(w, "no longer wanted")
            for window, (course, count) in wanted.items():
                if course.sandbox.gpu is not None and course.sandbox.gpu.kind in waiting_kinds:
                    continue  # learners wait for such GPUs: none is kept warm
                have = sum(1 for x in self.sandboxes.values() if x.window == window and x.state in ("booting", "ready"))
                live = sum(1 for x in self.sandboxes.values() if x.state in ("booting", "ready"))
                for _ in range(min(count - have, self.max_warm - live)):
                    if not await self._start(course, window):
                        break

    async def _waiting_kinds(self):
        line = self.admission.line
        if line is None:
            return set()
        return {e["gpu_kind"] for e in (await line.status()).values() if e["state"] == "waiting"}

    # -- one warm sandbox ---------------------------------------------------------

    async def _start(self, course, window):
        w = WarmSandbox(next(self._ids), course.id, window, server="", sandbox=course.sandbox)
        w.server = f"warm-{w.id}-{os.getpid()}"
        try:
            admitted = await self.db.run(
                ledger_admission.admit,
                course,
                WARM_USER,
                w.server,
                self.admission.inventory,
                self.first_uid,
                None,
                int(self.keep + self.lead),
                False,
            )
        except Exception as exc:  # no device free, the course's budget used up: nothing warm for now
            log.info("No warm sandbox for %s: %s", course.id, getattr(exc, "message", exc))
            return False
        w.devices = admitted.devices
        self.sandboxes[w.id] = w
        self.admission.warm_running.add((WARM_USER, w.server))
        try:
            await self._boot(course, w)
        except Exception as exc:
            log.warning("A warm sandbox for %s did not start: %s", course.id, exc)
            await self._stop(w, "did not start")
            return False
        log.info(
            "Warm sandbox %d of %s ready (%s)", w.id, course.id, ", ".join(d["id"] for d in w.devices) or "CPU only"
        )
        return True

    async def _boot(self, course, w):
        memory = parse_memory(course.sandbox.memory) if course.sandbox.memory else None
        limits = Limits(memory_bytes=memory, cpu=course.sandbox.cpu, pids=self.max_processes)
        w.group = await asyncio.to_thread(self.cgroups.create, f"{group_prefix(self.work_root)}warm{w.id}", limits)
        spec = namespace.Confinement(
            uid=None,
            gid=None,
            cwd=str(self.state_dir),
            gpu_minors=tuple(int(d.get("minor", d["id"])) for d in w.devices),
            device_dir=self.device_dir,
            tmp_bytes=parse_memory(self.tmp_size) if self.tmp_size else None,
            keep=(str(self.state_dir.parent), *namespace.software_folders()),
        )
        runner = [sys.executable, "-m", "aifhub.isolation.warm_runner"]
        # root until hand-over, but able to do nothing except become the learner
        runner = [namespace.setpriv_path(), "--bounding-set=-all,+setuid,+setgid", "--inh-caps=-all", "--", *runner]
        argv = await asyncio.to_thread(spec.argv, runner)
        group = w.group
        fsize = parse_memory(course.sandbox.disk) if course.sandbox.disk else None

        def preexec():
            group.join()
            if fsize:
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            os.umask(0o077)

        log_fd, w.log_copier = await asyncio.to_thread(sandbox_log.open_log, self.state_dir, w.server)
        try:
            w.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_fd,  # its own log, never the service's
                preexec_fn=preexec,
                start_new_session=True,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"},
            )
        finally:
            os.close(log_fd)
        line = await asyncio.wait_for(w.proc.stdout.readline(), self.boot_timeout)
        if line.decode().strip() != READY:
            raise RuntimeError(f"it said {line[:200]!r} instead of being ready")
        w.state = "ready"

    async def _stop(self, w, reason):
        w.state = "stopping"
        if w.proc is not None and w.proc.returncode is None:
            w.proc.stdin.close()  # a warm runner not handed over exits at the end of its stdin
            try:
                await asyncio.wait_for(w.proc.wait(), 10)
            except asyncio.TimeoutError:
                init = namespace.namespace_init(w.proc.pid)
                if init:
                    os.kill(init, 9)
                await w.proc.wait()
        if w.group is not None:
            await asyncio.to_thread(w.group.remove)
        await self.db.run(metering.release, WARM_USER, w.server, f"warm sandbox {reason}")
        self.admission.warm_running.discard((WARM_USER, w.server))
        self.sandboxes.pop(w.id, None)
        log.info("Warm sandbox %d of %s stopped: %s", w.id, w.course_id, reason)

    # -- a learner takes one --------------------------------------------------------

    def take(self, course):
        """A ready warm sandbox of ``course`` (as it is now) for the admission under way (None when none is ready)."""
        for w in self.sandboxes.values():
            if (
                w.course_id == course.id
                and w.sandbox == course.sandbox
                and w.state == "ready"
                and w.proc.returncode is None
            ):
                w.state = "taken"
                return w
        return None

    def untake(self, w):
        if w.state == "taken":
            w.state = "ready"

    def taken(self, w):
        """The admission that took ``w`` is recorded: its session is the learner's now."""
        self.admission.warm_running.discard((WARM_USER, w.server))
        self.handed[w.window] = self.handed.get(w.window, 0) + 1

    async def hand_over(self, warm_id, assignment):
        """Make the taken warm sandbox ``warm_id`` the learner's: ``{"pid", "cgroup", "devices"}``."""
        w = self.sandboxes.get(warm_id)
        if w is None or w.state != "taken" or w.proc.returncode is not None:
            raise LookupError(f"warm sandbox {warm_id} is not waiting for a learner")
        w.state = "handed"
        w.proc.stdin.write(json.dumps(assignment).encode() + b"\n")
        await w.proc.stdin.drain()
        w.proc.stdin.close()
        self.sandboxes.pop(w.id, None)
        env = assignment.get("env") or {}
        user, server = env.get("JUPYTERHUB_USER"), env.get("JUPYTERHUB_SERVER_NAME") or ""
        if user:  # the log and the cgroup follow the sandbox: now the learner's
            await asyncio.to_thread(
                sandbox_log.rename, self.state_dir, w.server, user + (f"+{server}" if server else "")
            )
            if w.group is not None:
                self.handed_groups[(user, server)] = w.group
        reaper = asyncio.ensure_future(w.proc.wait())  # the learner's server is our child: reap it when it ends
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)
        log.info("Warm sandbox %d of %s handed to uid %s", w.id, w.course_id, assignment.get("uid"))
        return {"pid": w.proc.pid, "cgroup": w.group.paths if w.group else [], "devices": w.devices}

    async def stop_all(self):
        for w in list(self.sandboxes.values()):
            await self._stop(w, "the service stops")

    def status(self):
        return [
            {
                "id": w.id,
                "course": w.course_id,
                "session": w.window[1],
                "state": w.state,
                "devices": [d["id"] for d in w.devices],
            }
            for w in self.sandboxes.values()
        ]
