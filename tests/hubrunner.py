"""Run a real aifhub (``aifhub up``: JupyterHub, proxy, service) for the tests and talk to it."""

import json
import os
import pty
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "test-admin-token-" + uuid.uuid4().hex
PASSWORD = "test-password"


def _worker_number():
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker[2:].isdigit() else 0


def _slot():
    """``AIFHUB_TEST_ID_SLOT=K`` moves every id range of this run by K * 300000, so that two test runs on one machine
    (two checkouts, or a developer's run beside CI's) never share a learner's or a grading job's uid."""
    slot = os.environ.get("AIFHUB_TEST_ID_SLOT", "0")
    return 300000 * int(slot) if slot.isdigit() else 0


def _offset():
    """How far this worker's ranges sit from the defaults: never 0, so that a test hub and a developer's `make run`
    (which keeps the defaults) never claim the same ids (`aifhub up` refuses a range another installation holds)."""
    return _slot() + 20000 * (_worker_number() + 1)


def grading_uids():
    """The uids this worker's hubs grade under."""
    first = _offset() + 300000
    return range(first, first + 10000)


def worker_id_ranges(second=False):
    """Service options that give the hubs of each pytest-xdist worker uids and gids of their own: two hubs on one
    machine with the same ranges would give learners of both the same uid, and a grading job's clean-up (every
    process of its grading uid is killed) would end the other hub's graded kernel of the same job number."""
    offset = _offset() + (10000 if second else 0)  # a second hub at once (the benchmarks'): the blocks between
    return [
        f"--AifhubService.first_uid={offset + 200000}",
        f"--GradingManager.first_uid={offset + 300000}",
        "--GradingManager.uid_count=10000",
        f"--GradingManager.first_course_gid={offset + 400000}",
    ]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningHub:
    """One ``aifhub up`` process and helpers for its REST API, sandboxes and kernels."""

    def __init__(
        self,
        state_dir,
        courses_dir,
        gpus="none",
        extra_args=(),
        log_path=None,
        env=None,
        meter_interval=2,
        terminal=False,
    ):
        self.state_dir = Path(state_dir)
        self.courses_dir = Path(courses_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path or self.state_dir.parent / "aifhub-up.log")
        self.args = [
            sys.executable,
            "-m",
            "aifhub",
            "up",
            "--port",
            str(self.port),
            "--state-dir",
            str(self.state_dir),
            "--courses",
            str(self.courses_dir),
            "--gpus",
            gpus,
            "--meter-interval",
            str(meter_interval),
            *extra_args,
        ]
        self.proc = None
        self.tokens = {}
        self.env = dict(env or {})
        self.terminal = terminal  # run in a pseudo-terminal, as a person does (the log then holds what they see)

    # -- lifecycle -----------------------------------------------------------

    def start(self, timeout=90):
        env = dict(os.environ, AIFHUB_DEMO_PASSWORD=PASSWORD, AIFHUB_ADMIN_TOKEN=ADMIN_TOKEN, **self.env)
        given = env.get("AIFHUB_SERVICE_ARGS", "")
        ranges = [] if "first_uid=" in given else worker_id_ranges()  # a hub given ranges of its own keeps them
        env["AIFHUB_SERVICE_ARGS"] = " ".join([*ranges, given]).strip()
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.log = open(self.log_path, "ab")
        if self.terminal:
            self.proc, self.reader = _in_terminal(self.args, env, self.log)
        else:
            self.proc = subprocess.Popen(self.args, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"aifhub up exited early; see {self.log_path}"
            with open(self.log_path, "rb") as log:  # `aifhub up` prints its banner once the hub is up
                log.seek(offset)
                if b"aifhub is running at" in log.read():
                    break
            time.sleep(0.3)
        else:
            raise AssertionError(f"aifhub up did not become ready in {timeout}s; see {self.log_path}")
        while time.monotonic() < deadline:  # and the service has synced the catalog
            try:
                if self.service("GET", "courses").status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise AssertionError(f"aifhub up did not become ready in {timeout}s; see {self.log_path}")

    def stop(self, timeout=90):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise
        if self.terminal:
            self.reader.join(10)
        self.log.close()
        return self.proc.returncode

    def logs(self):
        return self.log_path.read_text(errors="replace")

    # -- REST ----------------------------------------------------------------

    def api(self, method, path, token=ADMIN_TOKEN, **kw):
        return requests.request(
            method, f"{self.url}/hub/api/{path}", headers={"Authorization": f"token {token}"}, timeout=60, **kw
        )

    def service(self, method, path, token=ADMIN_TOKEN, **kw):
        return requests.request(
            method,
            f"{self.url}/services/aifhub/api/v1/{path}",
            headers={"Authorization": f"token {token}"},
            timeout=60,
            **kw,
        )

    def ensure_user(self, name):
        r = self.api("POST", f"users/{name}")
        assert r.status_code in (201, 409), r.text

    def token_for(self, name):
        if name not in self.tokens:
            self.ensure_user(name)
            r = self.api("POST", f"users/{name}/tokens", json={"note": "tests"})
            assert r.status_code == 201, r.text
            self.tokens[name] = r.json()["token"]
        return self.tokens[name]

    def spawn(self, name, course, wait=True):
        """Ask for ``name``'s server with ``course``; wait until it is ready when accepted."""
        self.ensure_user(name)
        r = self.api("POST", f"users/{name}/server", json={"course": course})
        if wait and r.status_code in (201, 202):
            self.wait_ready(name)
        return r

    def server_model(self, name):
        return self.api("GET", f"users/{name}").json()["servers"].get("")

    def wait_ready(self, name, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.server_model(name)
            if model and model["ready"]:
                return model
            if model is None:
                raise AssertionError(f"{name}'s server stopped while starting; see {self.log_path}")
            time.sleep(0.5)
        raise AssertionError(f"{name}'s server not ready after {timeout}s")

    def stop_server(self, name, timeout=60):
        r = self.api("DELETE", f"users/{name}/server")
        assert r.status_code in (202, 204), r.text
        deadline = time.monotonic() + timeout
        while self.server_model(name) is not None:
            assert time.monotonic() < deadline, f"{name}'s server did not stop"
            time.sleep(0.3)

    def progress_events(self, name, course):
        """Start ``name``'s server and collect the progress stream's events until ready."""
        self.ensure_user(name)
        result = {}
        poster = threading.Thread(target=lambda: result.update(r=self.spawn(name, course, wait=False)))
        poster.start()
        deadline = time.monotonic() + 30
        while not (self.server_model(name) or {}).get("pending"):
            assert time.monotonic() < deadline and poster.is_alive(), f"{name}'s spawn never showed as pending"
            time.sleep(0.05)
        events = []
        with requests.get(
            f"{self.url}/hub/api/users/{name}/server/progress",
            stream=True,
            timeout=120,
            headers={"Authorization": f"token {ADMIN_TOKEN}"},
        ) as resp:
            for line in resp.iter_lines():
                if line.startswith(b"data:"):
                    event = json.loads(line[5:])
                    events.append(event)
                    if event.get("ready") or event.get("failed"):
                        break
        poster.join()
        return result["r"], events

    # -- inside a sandbox, as the learner would ------------------------------

    def run_in_kernel(self, name, code, timeout=60):
        """Execute ``code`` in a new kernel of ``name``'s sandbox; return its stdout."""
        from kernelclient import execute  # local helper module

        token = self.token_for(name)
        return execute(self.url, f"/user/{name}/", token, code, timeout)

    def cli(self, *args, check=True):
        """Run ``aifhub ARGS`` against this hub's state directory (or --url in ARGS)."""
        out = subprocess.run(
            [sys.executable, "-m", "aifhub", *args],
            capture_output=True,
            text=True,
            env=dict(os.environ, AIFHUB_TOKEN=ADMIN_TOKEN),
        )
        if check:
            assert out.returncode == 0, f"aifhub {' '.join(args)} failed: {out.stderr}"
        return out


def _in_terminal(args, env, log):
    """Start ``args`` on a new pseudo-terminal (its input, output and errors) and copy what it shows to ``log``."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        args, cwd=REPO, env=dict(env, TERM="xterm"), stdin=slave, stdout=slave, stderr=slave, start_new_session=True
    )
    os.close(slave)

    def copy():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every process holding the terminal has ended
                break
            if not data:
                break
            log.write(data)
            log.flush()
        os.close(master)

    reader = threading.Thread(target=copy, daemon=True)
    reader.start()
    return proc, reader


def copy_courses(dest):
    """A private copy of the example courses (tests add broken ones to it)."""
    shutil.copytree(REPO / "courses", dest)
    return dest
