"""Talking to Slurm: slurmrestd over HTTP (the default) or the command-line tools, both asynchronous.

Contract: every method acts *as a site account* (``user``: the Unix name Slurm knows), never as the
hub's own identity, so Slurm itself checks what the learner may do (their association with the
course's account, its limits). slurmrestd authenticates each request with a JWT that names the user
(``X-SLURM-USER-NAME`` and ``X-SLURM-USER-TOKEN``): tokens are signed here with the cluster's JWT key
(``AuthAltParameters=jwt_key=`` of slurm.conf), as ``scontrol token username=...`` would make them.
Whoever holds that key can act as any user of the cluster: the hub keeps it readable by root only
(docs/slurm.md, docs/security.md).

Jobs come back as dicts with the keys of slurmrestd's v0.0.38 job answer that aifhub reads:
``job_id``, ``job_state``, ``state_reason``, ``start_time``, ``nodes``, ``user_name``, ``account``.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import shlex
import time

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

API = "v0.0.38"


class SlurmUnavailable(RuntimeError):
    """Slurm did not answer (slurmrestd or slurmctld down): nothing is known about the job."""


class SlurmRefused(RuntimeError):
    """Slurm answered with an error (an invalid account, a limit, an unknown job): ``str()`` is Slurm's words."""


def jwt_token(key, username, lifetime=600, now=None):
    """An HS256 token for Slurm's auth/jwt naming ``username`` (the ``sun`` claim), valid ``lifetime`` seconds."""

    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time() if now is None else now)
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64(json.dumps({"iat": now, "exp": now + lifetime, "sun": username}, separators=(",", ":")).encode())
    sig = b64(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def _errors(answer):
    return "; ".join(
        e.get("error") or e.get("description") or str(e) for e in (answer or {}).get("errors") or [] if e
    ).strip()


class RestBackend:
    """slurmrestd at ``url`` (``http://host:port``), tokens signed with the key in ``jwt_key_file``."""

    name = "rest"

    def __init__(self, url, jwt_key_file, timeout=20):
        self.url = url.rstrip("/")
        self.jwt_key_file = jwt_key_file
        self.timeout = timeout
        self._key = None

    def _headers(self, user):
        if self._key is None:
            with open(self.jwt_key_file, "rb") as f:  # small, read once (at the first call, not on import)
                self._key = f.read()
        return {
            "X-SLURM-USER-NAME": user,
            "X-SLURM-USER-TOKEN": jwt_token(self._key, user),
            "Content-Type": "application/json",
        }

    async def _call(self, method, path, user, body=None):
        request = HTTPRequest(
            f"{self.url}/slurm/{API}/{path}",
            method=method,
            headers=self._headers(user),
            body=None if body is None else json.dumps(body),
            request_timeout=self.timeout,
            connect_timeout=self.timeout,
            allow_nonstandard_methods=True,
        )
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, HTTPClientError, asyncio.TimeoutError) as exc:
            raise SlurmUnavailable(f"slurmrestd at {self.url} did not answer: {exc}") from exc
        if response.code == 599:
            raise SlurmUnavailable(f"slurmrestd at {self.url} did not answer: {response.error}")
        try:
            answer = json.loads(response.body or b"{}")
        except ValueError as exc:
            raise SlurmUnavailable(f"slurmrestd answered {response.code} without JSON") from exc
        problem = _errors(answer)
        if response.code >= 400 or problem:
            if response.code in (401, 403) and not problem:
                problem = "authentication failed (is the hub's JWT key the cluster's?)"
            raise SlurmRefused(problem or f"HTTP {response.code}")
        return answer

    async def submit(self, user, script, job):
        """Submit a batch job as ``user``; its id. ``job``: v0.0.38 job properties (account, gres, ...)."""
        answer = await self._call("POST", "job/submit", user, {"script": script, "job": job})
        return int(answer["job_id"])

    async def job(self, user, job_id):
        """The job as a dict (see the module's docstring), or None when Slurm no longer knows it."""
        try:
            answer = await self._call("GET", f"job/{int(job_id)}", user)
        except SlurmRefused as exc:
            if "Invalid job id" in str(exc) or "Unable to query" in str(exc):
                return None
            raise
        jobs = answer.get("jobs") or []
        return jobs[0] if jobs else None

    async def cancel(self, user, job_id):
        try:
            await self._call("DELETE", f"job/{int(job_id)}", user)
        except SlurmRefused as exc:
            if "already completed" in str(exc) or "Invalid job id" in str(exc):
                return
            raise


class CliBackend:
    """``sbatch``, ``squeue`` and ``scancel`` run as the site account (``sudo -u`` or, as root, ``setpriv``):
    the second way, for sites without slurmrestd. Commands run in subprocesses; the hub's loop never waits."""

    name = "cli"

    def __init__(self, env=None, prefix=None):
        self.env = dict(env or {})
        self.prefix = prefix  # e.g. ["sudo", "-u", "{user}"]; None: setpriv to the user's uid (the hub is root)

    def _as(self, user, args):
        if self.prefix is not None:
            return [p.format(user=user) for p in self.prefix] + args
        import pwd

        pw = pwd.getpwnam(user)
        return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--", *args]

    async def _run(self, user, args, stdin=None):
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._as(user, args),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, **self.env},
            )
            out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
        except (OSError, KeyError, asyncio.TimeoutError) as exc:
            raise SlurmUnavailable(f"{shlex.join(args[:1])} failed: {exc}") from exc
        if proc.returncode:
            raise SlurmRefused(err.decode(errors="replace").strip().removeprefix(f"{args[0]}: error: "))
        return out.decode()

    async def submit(self, user, script, job):
        args = ["sbatch", "--parsable", "--export=NONE", *job_to_sbatch_args(job)]
        out = await self._run(user, args, with_environment(script, job.get("environment") or {}).encode())
        return int(out.strip().split(";")[0])

    async def job(self, user, job_id):
        try:
            out = await self._run(user, ["squeue", "-h", "-j", str(int(job_id)), "-o", "%i|%T|%r|%S|%N|%a|%u"])
        except SlurmRefused as exc:
            if "Invalid job id" in str(exc):
                return None
            raise
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 7 and parts[0] == str(int(job_id)):
                return {
                    "job_id": int(parts[0]),
                    "job_state": parts[1],
                    "state_reason": parts[2],
                    "start_time": _epoch(parts[3]),
                    "nodes": parts[4],
                    "account": parts[5],
                    "user_name": parts[6],
                }
        return None

    async def cancel(self, user, job_id):
        await self._run(user, ["scancel", str(int(job_id))])


def _epoch(text):
    """squeue's %S (the cluster's local time, or N/A) -> epoch seconds, 0 when unknown."""
    try:
        return int(time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return 0


def job_to_sbatch_args(job):
    """The v0.0.38 job properties aifhub sets, as sbatch options (the environment goes into the script)."""
    flags = {
        "account": "--account",
        "partition": "--partition",
        "qos": "--qos",
        "reservation": "--reservation",
        "constraints": "--constraint",
        "gres": "--gres",
        "cpus_per_task": "--cpus-per-task",
        "memory_per_node": "--mem",
        "time_limit": "--time",
        "comment": "--comment",
        "name": "--job-name",
        "current_working_directory": "--chdir",
        "standard_output": "--output",
    }
    return [f"{flag}={job[key]}" for key, flag in flags.items() if job.get(key) not in (None, "")]


def with_environment(script, env):
    """``script`` with ``export`` lines for ``env`` after its first line (sbatch's --export splits on commas)."""
    first, _, rest = script.partition("\n")
    exports = "".join(f"export {k}={shlex.quote(str(v))}\n" for k, v in env.items())
    return f"{first}\n{exports}{rest}"
