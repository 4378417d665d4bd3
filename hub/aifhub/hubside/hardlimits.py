"""Hard limits for local sandboxes: a control group each (memory, CPU, processes) and a namespace
(only its own GPUs' device nodes, its own processes, private /tmp), as root.

Mixed into :class:`~aifhub.hubside.local.LocalSandboxSpawner`; the pure parts live in
:mod:`aifhub.isolation`. What the machine cannot enforce is said once in the hub's log
and in every spawn's progress, or refuses the spawn when the setting says ``always``.
"""

import asyncio
import os
import resource
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from subprocess import Popen

from jupyterhub.spawner import SpawnException
from jupyterhub.utils import random_port
from traitlets import Enum, Integer, Unicode, validate
from traitlets.config import LoggingConfigurable

from ..catalog.model import parse_memory
from ..isolation import namespace as confine
from ..isolation import sandbox_log
from ..isolation.cgroups import CgroupError, Cgroups, Limits, group_prefix
from ..isolation.reach import sandbox_obstacles

_SETUP = []  # [Cgroups or CgroupError], found once per hub process
# The stop and poll path's few file operations (a cgroup's counters, its removal) have threads of their own:
# in the default executor they waited behind a storm's spawns (work folders copied, processes started), so
# every poll of a stop took seconds and each of the stop's waits ran several times its setting.
_STOP_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="aifhub-stop")


async def off_loop(fn, *args):
    """``fn(*args)`` in the stop path's own threads (not the default executor, which a spawn storm fills)."""
    return await asyncio.get_running_loop().run_in_executor(_STOP_THREADS, fn, *args)


def machine_cgroups(sweep=None):
    """This machine's cgroups, prepared for sandboxes' groups (once per process; the empty groups named
    ``sweep...`` are removed then)."""
    if not _SETUP:
        try:
            groups = Cgroups.detect()
            groups.prepare()
            if sweep:
                groups.sweep(sweep)
            _SETUP.append(groups)
        except (CgroupError, OSError) as exc:
            _SETUP.append(exc if isinstance(exc, CgroupError) else CgroupError(str(exc)))
    return _SETUP[0]


class HardLimitsMixin(LoggingConfigurable):
    """Traits and launch steps of confined local sandboxes."""

    use_cgroups = Enum(
        ["auto", "always", "never"],
        "auto",
        help="Run each sandbox in its own control group with the course's memory and CPU limits and "
        "`max_processes`: 'auto' when the hub runs as root and the machine has cgroups (else the hub says "
        "what is not enforced), 'always' refuses spawns that cannot be limited, 'never' turns it off.",
    ).tag(config=True)
    use_bubblewrap = Enum(
        ["auto", "always", "never"],
        "auto",
        help="Run each sandbox in a bubblewrap mount and PID namespace (only its own GPUs' device nodes, its "
        "own processes, private /tmp and /dev/shm): 'auto' when the hub runs as root and bwrap and setpriv are "
        "installed, 'always' refuses spawns without them, 'never' turns it off. Without it, GPU courses "
        "are refused (a sandbox could open any GPU's device node).",
    ).tag(config=True)
    device_dir = Unicode(
        "/dev",
        help="Where the host's GPU device nodes (nvidia0, nvidiactl, ...) are; the sandbox sees them at /dev.",
    ).tag(config=True)
    max_processes = Integer(
        512,
        help="Processes and threads one sandbox may have at once (the pids controller of its cgroup).",
    ).tag(config=True)
    tmp_size = Unicode(
        "1G",
        help="Size of a sandbox's private /tmp and of its /dev/shm (memory-backed, within its memory limit), "
        "e.g. 1G or 512Mi.",
    ).tag(config=True)
    max_file_size = Unicode(
        "",
        help="Largest file a sandbox may write (RLIMIT_FSIZE), e.g. 20G; empty: the course's disk limit, if any.",
    ).tag(config=True)

    sandbox_log_size = Unicode(
        "4M",
        help="How much of a sandbox's output (its server's log, whatever its processes write to stdout or stderr) "
        "is kept, in <state>/logs/sandboxes/<user>+<server>.log; the rest is dropped. A sandbox never writes to "
        "the hub's own log.",
    ).tag(config=True)

    @validate("tmp_size", "max_file_size", "sandbox_log_size")
    def _validate_size(self, proposal):
        if proposal.value:
            try:
                parse_memory(proposal.value)
            except ValueError:
                raise ValueError(f"{proposal.trait.name}: {proposal.value!r} is not a size (expected e.g. 1G or 512Mi)")
        return proposal.value

    @validate("max_processes")
    def _validate_processes(self, proposal):
        if proposal.value < 16:
            raise ValueError(
                f"max_processes must be at least 16 (a Jupyter server and a kernel need that many), "
                f"got {proposal.value}"
            )
        return proposal.value

    # -- what this machine can do ---------------------------------------------

    def _cgroups(self):
        """``(Cgroups or None, why not)`` for this spawn."""
        if self.use_cgroups == "never":
            return None, "turned off (use_cgroups = 'never')"
        found = machine_cgroups(sweep=self._group_prefix())
        return (None, str(found)) if isinstance(found, CgroupError) else (found, "")

    def _bubblewrap(self):
        """``True, ""`` when sandboxes can run in a namespace, else ``False, why not``."""
        if self.use_bubblewrap == "never":
            return False, "turned off (use_bubblewrap = 'never')"
        if os.geteuid() != 0:
            return False, "the hub does not run as root"
        missing = [
            name
            for name, path in (("bwrap", confine.bwrap_path()), ("setpriv", confine.setpriv_path()))
            if path is None
        ]
        if missing:
            return False, f"{' and '.join(missing)} not found (apt-get install bubblewrap util-linux)"
        return True, ""

    def _not_enforced(self, what, why, setting):
        if setting == "always":
            raise SpawnException(
                f"This sandbox cannot start: {what} cannot be enforced on this machine ({why}). "
                "An administrator must fix this.",
                reason="limits-unavailable",
                status_code=503,
            )
        self.log.warning("%s's sandbox: %s NOT enforced: %s", self.user.name, what, why)
        self.emit(45, f"Note: {what} not enforced on this machine ({why})")

    # -- the launch -------------------------------------------------------------

    def sandbox_limits(self, course):
        sandbox = course.get("sandbox") or {}
        memory = parse_memory(sandbox["memory"]) if sandbox.get("memory") else None
        return Limits(memory_bytes=memory, cpu=sandbox.get("cpu"), pids=self.max_processes)

    def _group_prefix(self):
        return group_prefix(self.work_root)

    def _group_name(self, uid):
        return f"{self._group_prefix()}uid{uid}" + (f"-{self.name}" if self.name else "")

    async def prepare_limits(self, admission, uid):
        """Create the sandbox's cgroup and decide its namespace; sets ``self.cgroup`` and ``self.confined``."""
        self.cgroup, self.confined, self.oom_seen = None, False, 0
        if uid is None:  # not root: sandboxes are not isolated at all, which the spawner already says
            return
        obstacles = await asyncio.to_thread(sandbox_obstacles, self.cmd, self.work_root, uid)
        if obstacles:
            raise SpawnException(
                "This sandbox cannot start: its uid cannot reach the Python environment or the work "
                f"folders ({obstacles[0][1].path} is closed to other users). An administrator must "
                "fix this; the hub log says how.",
                reason="unreachable",
                status_code=500,
                log_message="; ".join(b.message(what) for what, b in obstacles),
            )
        limits = self.sandbox_limits(admission["course"])
        groups, why = self._cgroups()
        if groups is None:
            self._not_enforced("memory, CPU and process limits", why, self.use_cgroups)
        else:
            try:
                self.cgroup = await asyncio.to_thread(groups.create, self._group_name(uid), limits)
            except OSError as exc:
                self._not_enforced(
                    "memory, CPU and process limits", f"cannot create its cgroup: {exc}", self.use_cgroups
                )
            else:
                self.oom_seen = await asyncio.to_thread(self.cgroup.oom_kills)
                memory = f"{limits.memory_bytes / 2**30:.1f} GiB" if limits.memory_bytes else "no memory limit"
                cpu = f"{limits.cpu:g} CPU" if limits.cpu else "no CPU limit"
                self.emit(45, f"Limits: {memory}, {cpu}, {limits.pids} processes")
        ok, why = self._bubblewrap()
        if ok:
            self.confined = True
        elif admission["devices"]:
            raise SpawnException(
                f"This GPU sandbox cannot start: it must run in a namespace that shows it only its own GPU, "
                f"and {why}. An administrator must install bubblewrap (apt-get install bubblewrap).",
                reason="no-namespace",
                status_code=503,
            )
        else:
            self._not_enforced("a private /dev, /proc and /tmp", why, self.use_bubblewrap)

    def _confinement(self, uid, groups):
        admission = self.admission
        return confine.Confinement(
            uid=uid,
            gid=uid,
            groups=tuple(groups),
            cwd=str(self.home / admission["course"]["id"]),
            gpu_minors=tuple(int(d.get("minor", d["id"])) for d in admission["devices"]),
            device_dir=self.device_dir,
            tmp_bytes=parse_memory(self.tmp_size) if self.tmp_size else None,
            keep=(
                str(Path(self.work_root).resolve().parent),
                *confine.software_folders(),
                str(Path(self.cmd[0]).resolve().parent),
            ),
        )

    def _file_size_limit(self):
        if self.max_file_size:
            return parse_memory(self.max_file_size)
        disk = ((self.admission or {}).get("course") or {}).get("sandbox", {}).get("disk")
        return parse_memory(disk) if disk else None

    def confined_preexec(self, cwd):
        """What the sandbox's process does between fork and exec when confined (still root)."""
        group, fsize = self.cgroup, self._file_size_limit()

        def preexec():
            if group is not None:
                group.join()
            if fsize:
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            os.umask(0o077)
            os.chdir(cwd)

        return preexec

    async def launch(self, uid, groups):
        """Start the single-user server (as LocalProcessSpawner.start does), confined when possible."""
        if self.port == 0:
            self.port = random_port()
        env = self.get_env()
        cmd = [*self.cmd, *self.get_args()]
        cwd = str(self.home / self.admission["course"]["id"])
        if self.confined:
            spec = self._confinement(uid, groups)
            missing = await asyncio.to_thread(spec.missing_gpu_nodes)
            for node in missing:
                self.log.warning("%s's sandbox: no device node %s on this machine", self.user.name, node)
            if "CUDA_VISIBLE_DEVICES" in env and all(d.get("uuid") for d in self.admission["devices"]):
                env["CUDA_VISIBLE_DEVICES"] = ",".join(d["uuid"] for d in self.admission["devices"])
            argv = await asyncio.to_thread(spec.argv, cmd)  # it looks at the file system
            preexec = self.confined_preexec(cwd)
        else:
            argv, preexec = cmd, self._joining(self.make_preexec_fn(self.user.name))
        self.log.info("Spawning %s's sandbox: %s", self.user.name, " ".join(argv))
        log_fd, self.log_copier = await asyncio.to_thread(
            sandbox_log.open_log,
            Path(self.work_root).parent,
            self.user.name + (f"+{self.name}" if self.name else ""),
            parse_memory(self.sandbox_log_size),
            uid or sandbox_log.NOBODY,  # the copier runs as the learner (gid = uid here) or nobody
            uid or sandbox_log.NOBODY,
        )
        try:  # fork and exec in a thread: a storm of spawns must not hold the hub's event loop
            self.proc = await asyncio.to_thread(
                Popen, argv, preexec_fn=preexec, start_new_session=True, env=env, stdout=log_fd, stderr=log_fd
            )
        finally:
            os.close(log_fd)
        self.pid = self.proc.pid
        return (self.ip or "127.0.0.1", self.port)

    def _joining(self, preexec):
        group, fsize = getattr(self, "cgroup", None), self._file_size_limit()

        def run():
            if group is not None:
                group.join()
            if fsize:
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            preexec()

        return run

    # -- signals, stop and what the kernel did -----------------------------------

    async def _signal(self, sig):
        """Signal the sandbox: its server for SIGINT/SIGTERM, the whole namespace for SIGKILL.

        bwrap forwards no signals, so the server is found below it. True while the sandbox runs.
        """
        if not getattr(self, "confined", False) or sig == 0:
            return await super()._signal(sig)
        target = confine.server_pid(self.pid) if sig != signal.SIGKILL else confine.namespace_init(self.pid)
        if target is None and sig == signal.SIGKILL:
            target = self.pid  # bwrap itself, before its namespace exists
        if target is not None:
            try:
                os.kill(target, sig)
            except ProcessLookupError:
                pass
        if sig == signal.SIGKILL and self.cgroup is not None:
            await off_loop(self.cgroup.kill_all)
        return await super()._signal(0)

    async def stop_process(self, now=False):
        """Stop the sandbox's process, bounded: SIGINT (only once JupyterLab answers: while it loads, it does not
        handle SIGINT yet), then SIGTERM, then SIGKILL, each waiting at most its timeout (``interrupt_timeout``,
        ``term_timeout``, ``kill_timeout``) on the loop's clock. Each look is a non-blocking ``waitpid`` or
        signal 0, never a thread: a storm's busy executor cannot stretch a wait. True once the process is gone."""
        steps = []
        if not now and not getattr(self, "loading", False):
            steps.append((signal.SIGINT, self.interrupt_timeout))
        if not now:
            steps.append((signal.SIGTERM, self.term_timeout))
        steps.append((signal.SIGKILL, self.kill_timeout))
        if await self._gone():
            return True
        for sig, timeout in steps:
            if sig != signal.SIGKILL and getattr(self, "confined", False) and confine.server_pid(self.pid) is None:
                continue  # no server below bwrap yet: nothing to stop gracefully
            self.log.debug("%s's sandbox: signal %s", self.user.name, signal.Signals(sig).name)
            await self._signal(sig)
            if await self._gone_within(timeout):
                return True
        self.log.warning("%s's sandbox (pid %s) did not die after SIGKILL", self.user.name, self.pid)
        return False

    async def _gone(self):
        """Whether the sandbox's process has ended (the spawner's own poll: waitpid or signal 0, no thread)."""
        return await super().poll() is not None

    async def _gone_within(self, timeout):
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + timeout, 0.02
        while True:
            if await self._gone():
                return True
            left = deadline - loop.time()
            if left <= 0:
                return False
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.25)

    async def memory_kills(self):
        """New kills by the kernel for exceeding the memory limit since last asked (0 without a cgroup)."""
        group = getattr(self, "cgroup", None)
        if group is None:
            return 0
        count = await off_loop(group.oom_kills)
        new, self.oom_seen = max(0, count - self.oom_seen), count
        return new

    async def remove_limits(self):
        """Kill whatever is left in the sandbox's cgroup (background processes) and remove it."""
        group, self.cgroup = getattr(self, "cgroup", None), None
        if group is not None:
            left = await off_loop(group.remove)
            if left:
                self.log.warning("%s's sandbox: cgroup not removed: %s", self.user.name, "; ".join(left))

    def _group_at(self, paths):
        """The cgroup at ``paths`` (a warm sandbox's), when cgroups are in use here."""
        groups = machine_cgroups(sweep=self._group_prefix())
        return groups.existing(paths) if isinstance(groups, Cgroups) else None

    def limits_state(self):
        return {
            "cgroup": self.cgroup.paths if getattr(self, "cgroup", None) else [],
            "confined": bool(getattr(self, "confined", False)),
            "oom_seen": getattr(self, "oom_seen", 0),
        }

    def load_limits_state(self, saved):
        self.confined = bool(saved.get("confined"))
        self.oom_seen = saved.get("oom_seen", 0)
        groups = machine_cgroups() if saved.get("cgroup") else None
        self.cgroup = groups.existing(saved["cgroup"]) if isinstance(groups, Cgroups) else None
