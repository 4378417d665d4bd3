"""The service's side of grading workers: long-lived ``python -m aifhub.grading.runners.worker`` processes."""

import asyncio
import json
import logging
import os
import signal
import sys

from ..errors import Refusal
from .coursedir import venv_path_env
from .failures import step_refusal
from .runners.worker import RESULT, kill_uid

log = logging.getLogger(__name__)

SECRETS = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN", "AIFHUB_INTERNAL_TOKEN", "AIFHUB_ADMIN_TOKEN", "AIFHUB_TOKEN")


class WorkerDied(Exception):
    """The worker process ended or was killed while it answered a request."""


class WorkerProcess:
    """One worker process, started on first use; one request at a time."""

    def __init__(self, name, runtime_dir):
        self.name = name
        self.runtime_dir = str(runtime_dir)
        self.proc = None
        self.lock = asyncio.Lock()

    @property
    def alive(self):
        return self.proc is not None and self.proc.returncode is None

    async def _start(self):
        env = venv_path_env({k: v for k, v in os.environ.items() if k not in SECRETS})
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",
            "-m",
            "aifhub.grading.runners.worker",
            self.runtime_dir,  # -P: nothing imported from the cwd
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
            limit=16 * 1024 * 1024,
        )
        hello = await self._read()
        log.info("grading worker %s started (pid %s)", self.name, hello.get("pid"))

    async def _read(self):
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                await self.proc.wait()
                raise WorkerDied(f"grading worker {self.name} exited with status {self.proc.returncode}")
            text = line.decode(errors="replace")
            if text.startswith(RESULT):
                return json.loads(text[len(RESULT) :])

    async def call(self, request, timeout=None):
        """Send ``request``; its answer, or TimeoutError (the worker is then killed)."""
        async with self.lock:
            if not self.alive:
                await self._start()
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            await self.proc.stdin.drain()
            try:
                return await asyncio.wait_for(self._read(), timeout)
            except asyncio.TimeoutError:
                await self.kill()
                raise
            except WorkerDied:
                self.proc = None
                raise

    async def kill(self):
        if self.alive:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await self.proc.wait()
        self.proc = None

    async def stop(self):
        if self.alive:
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except asyncio.TimeoutError:
                await self.kill()
        self.proc = None


class StepWorker:
    """The worker process of trusted steps (release, collect, feedback, grades, a gradebook's copy): one at a
    time, each within ``settings.notebook_timeout``; a failure is a :class:`~aifhub.errors.Refusal` for people."""

    def __init__(self, settings):
        self.settings = settings
        self.process = WorkerProcess("steps", settings.root / ".workers" / "steps")

    async def run(self, request, what):
        """The worker's answer to ``request``; ``what``: the step in words ("Releasing ps1"), for refusals."""
        timeout = self.settings.notebook_timeout
        try:
            answer = await self.process.call(request, timeout=timeout)
        except asyncio.TimeoutError:
            raise Refusal("step-timeout", f"{what} took longer than {timeout} s and was stopped.")
        except WorkerDied as exc:
            raise step_refusal(what, error=exc)
        if not answer.get("ok"):
            raise step_refusal(what, answer)  # a short sentence for people; the details in the log
        return answer

    async def kill(self):
        await self.process.kill()


def kill_grading_uid(uid):
    if uid is not None:
        return kill_uid(uid)
    return 0
