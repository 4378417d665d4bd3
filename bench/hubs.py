"""The two hubs the benchmarks compare, started and stopped by the benchmarks themselves.

- aifhub: ``aifhub up`` through the tests' :class:`RunningHub` (catalog, admission, GPU pool,
  the aifhub service, per-learner uids when run as root);
- plain: JupyterHub as it comes, with its own config file written to a scratch directory: dummy
  login, ``SimpleLocalProcessSpawner``, the same single-user command (``jupyterhub-singleuser``,
  default URL ``/lab``), the same ``configurable-http-proxy`` and an admin token given to a
  service, as most small deployments do.

Both answer the same REST helpers (``api``, ``token_for``, ``server_model`` ...), and both accept
the tests' admin token, so one benchmark function measures either.
"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import psutil
import requests

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

from hubrunner import ADMIN_TOKEN, RunningHub, free_port, worker_id_ranges  # noqa: E402, F401  (the tests' helper; worker_id_ranges for bench.warm)

from aifhub.hubside.embedded import proxy_command  # noqa: E402

AS_ROOT = os.geteuid() == 0
COURSE = "dl-basics"  # the CPU MOOC: open enrolment, no GPU
BINDIR = Path(sys.executable).parent
SANDBOX_PATH = f"{BINDIR}:/usr/local/bin:/usr/bin:/bin"  # what aifhub gives its sandboxes


class BenchError(RuntimeError):
    """A benchmark could not measure what it set out to (a hub did not start, a spawn failed)."""


# -- aifhub ----------------------------------------------------------------


SERVICE_ARGS_CONFIG = """\
# aifhub's embedded configuration, with extra arguments for the aifhub service (written by `python -m bench`).
from aifhub.hubside.embedded import SERVICE_NAME, configure

configure(c)  # noqa: F821
for service in c.JupyterHub.services:  # noqa: F821
    if service["name"] == SERVICE_NAME:
        service["command"] = [*service["command"], *{args!r}]
"""


def aifhub_hub(workdir, gpus="0", meter_interval=60, service_args=(), second=False):
    """An ``aifhub up`` (not started) on the repository's courses, state in ``workdir``; ``second``: it runs while
    another benchmark hub does (uid ranges of its own: ``aifhub up`` refuses ranges another installation holds).

    ``service_args`` are added to the aifhub service's command line (through a hub config file
    that extends the embedded one, as ``aifhub up --config`` allows).
    """
    workdir = Path(workdir)
    extra = ()
    if service_args:
        config = workdir / "jupyterhub_config.py"
        config.write_text(SERVICE_ARGS_CONFIG.format(args=list(service_args)))
        extra = ("--config", str(config))
    hub = RunningHub(
        workdir / "state", REPO / "courses", gpus=gpus, log_path=workdir / "aifhub-up.log", extra_args=extra
    )
    i = hub.args.index("--meter-interval")
    hub.args[i + 1] = str(meter_interval)  # the tests meter every 2 s; the benchmarks use the default
    hub.kind = "aifhub"
    if second:
        hub.env["AIFHUB_SERVICE_ARGS"] = " ".join(worker_id_ranges(second=True))
    return hub


# -- plain JupyterHub --------------------------------------------------------

PLAIN_CONFIG = """\
# Plain JupyterHub: the baseline of aifhub's benchmarks (written by `python -m bench`).
c = get_config()  # noqa: F821
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = {db_url!r}
c.JupyterHub.cookie_secret_file = {cookie_secret!r}
c.ConfigurableHTTPProxy.command = {proxy!r}
c.ConfigurableHTTPProxy.api_url = {proxy_api!r}
c.ConfigurableHTTPProxy.pid_file = {proxy_pid!r}
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.Spawner.cmd = {cmd!r}
c.Spawner.args = {args!r}
c.Spawner.default_url = "/lab"
c.Spawner.environment = {{"PATH": {path!r}}}
c.SimpleLocalProcessSpawner.home_dir_template = {homes!r}
c.JupyterHub.services = [{{"name": "bench-admin", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "admin", "services": ["bench-admin"]}}]
"""


class PlainHub(RunningHub):
    """JupyterHub with its simple local spawner, answering the same helpers as :class:`RunningHub`.

    As root, the simple spawner runs every server as root (it never switches uid), so the
    single-user server gets ``--allow-root``; aifhub runs each sandbox under the learner's own uid.
    """

    kind = "plain"

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "jupyterhub.log"
        self.state_dir = self.workdir
        self.hub_port = free_port()
        config = PLAIN_CONFIG.format(
            port=self.port,
            hub_port=self.hub_port,
            db_url=f"sqlite:///{self.workdir / 'jupyterhub.sqlite'}",
            cookie_secret=str(self.workdir / "jupyterhub_cookie_secret"),
            proxy=proxy_command(),
            proxy_api=f"http://127.0.0.1:{free_port()}",
            proxy_pid=str(self.workdir / "proxy.pid"),
            cmd=[str(BINDIR / "jupyterhub-singleuser")],
            args=["--allow-root"] if AS_ROOT else [],
            path=SANDBOX_PATH,
            homes=str(self.workdir / "home" / "{username}"),
            token=ADMIN_TOKEN,
        )
        self.config_path = self.workdir / "jupyterhub_config.py"
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds a token
        with os.fdopen(fd, "w") as f:
            f.write(config)
        self.args = [sys.executable, "-m", "jupyterhub", "-f", str(self.config_path)]
        self.proc = None
        self.tokens = {}

    def start(self, timeout=90):
        env = dict(os.environ, PATH=f"{BINDIR}{os.pathsep}{os.environ.get('PATH', '')}")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, cwd=self.workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"plain JupyterHub exited early; see {self.log_path}")
            try:
                if self.api("GET", "").status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise BenchError(f"plain JupyterHub did not answer in {timeout}s; see {self.log_path}")


# -- lifecycle -----------------------------------------------------------------


def scratch_dir(prefix="aifhub-bench-"):
    """A scratch directory that learners' sandboxes (other uids, when root) can traverse into."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if AS_ROOT:
        path.chmod(0o711)
    return path


class Descendants(threading.Thread):
    """Remembers every process started under ``pid`` (the proxy, the service, sandboxes), so that
    none outlives the benchmark, even when the hub in between dies first and they are orphaned."""

    def __init__(self, hub, every=0.3):
        super().__init__(daemon=True)
        self.hub, self.every = hub, every
        self.seen = {}
        self.done = threading.Event()

    def snapshot(self):
        proc = getattr(self.hub, "proc", None)
        if proc is None:
            return
        try:
            for p in psutil.Process(proc.pid).children(recursive=True):
                self.seen.setdefault(p.pid, p)  # a psutil.Process checks its start time before signalling
        except psutil.NoSuchProcess:
            pass

    def run(self):
        while not self.done.wait(self.every):
            self.snapshot()

    def stop(self):
        self.done.set()
        self.snapshot()
        return list(self.seen.values())


def shut_down(hub, watch=None, timeout=90):
    """Stop ``hub`` (SIGTERM: it stops its servers, proxy and services), then kill whatever it left."""
    proc = getattr(hub, "proc", None)
    if proc is None:
        return
    tree = watch.stop() if watch else []
    if not watch:
        try:
            tree = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    finally:
        if getattr(hub, "log", None) and not hub.log.closed:
            hub.log.close()
        alive = _wait_procs(tree)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        _wait_procs(alive)


def _wait_procs(procs, timeout=5):
    """The processes still alive after ``timeout`` (one that ends while psutil looks is gone, not an error)."""
    try:
        return psutil.wait_procs(procs, timeout=timeout)[1]
    except (OSError, psutil.Error):
        return [p for p in procs if p.is_running()]


@contextmanager
def running(hub, timeout=120):
    """Start ``hub``; stop it and every process it started on the way out, even on failure."""
    watch = Descendants(hub)
    watch.start()
    try:
        hub.start(timeout=timeout)
        yield hub
    except AssertionError as exc:  # the tests' helper asserts; here it is a benchmark that cannot run
        try:
            tail = "\n".join(Path(hub.log_path).read_text(errors="replace").splitlines()[-15:])
        except OSError:
            tail = ""
        raise BenchError(f"{exc}\n{tail}".rstrip()) from exc
    finally:
        shut_down(hub, watch)


# -- spawning, as a learner does ------------------------------------------------


def user_token(hub, name):
    """A token the user owns (cheap to check: the hub made it, unlike config tokens)."""
    return hub.token_for(name)


def server_of(hub, name, token):
    r = hub.api("GET", f"users/{name}", token=token)
    r.raise_for_status()
    return r.json()["servers"].get("")


def request_spawn(hub, name, token, course=None):
    return hub.api("POST", f"users/{name}/server", token=token, json={"course": course or COURSE})


def wait_ready(hub, name, token, timeout=240, poll=0.1):
    """Seconds waited until ``name``'s server is ready; raises :class:`BenchError` if it stops or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = server_of(hub, name, token)
        if model is None:
            raise BenchError(f"{hub.kind}: {name}'s server stopped while starting; see {hub.log_path}")
        if model["ready"]:
            return
        time.sleep(poll)
    raise BenchError(f"{hub.kind}: {name}'s server not ready after {timeout}s")


def timed_spawn(hub, name, timeout=240):
    """Seconds from the spawn request to a ready server (the user exists and has a token already)."""
    token = user_token(hub, name)
    t0 = time.monotonic()
    r = request_spawn(hub, name, token)
    if r.status_code not in (201, 202):
        raise BenchError(f"{hub.kind}: spawning {name} answered {r.status_code}: {r.text[:300]}")
    if r.status_code == 202:
        wait_ready(hub, name, token, timeout)
    return time.monotonic() - t0


def stop_server(hub, name, timeout=60):
    r = hub.api("DELETE", f"users/{name}/server")
    if r.status_code not in (202, 204, 400, 404):
        raise BenchError(f"{hub.kind}: stopping {name} answered {r.status_code}: {r.text[:300]}")
    deadline = time.monotonic() + timeout
    while hub.server_model(name) is not None:
        if time.monotonic() > deadline:
            raise BenchError(f"{hub.kind}: {name}'s server did not stop in {timeout}s")
        time.sleep(0.2)


def watch_progress(hub, name, token, timeout=240, until=None, poll=0.02, events=None):
    """Follow ``name``'s progress stream once the spawn is pending: ``[(wall time, event)]`` (appended to
    ``events`` as they come, when given)."""
    deadline = time.monotonic() + timeout
    while True:
        model = server_of(hub, name, token)
        if model and (model.get("pending") == "spawn" or model.get("ready")):
            break
        if time.monotonic() > deadline or (until is not None and until()):
            return [] if events is None else events
        time.sleep(poll)
    events = [] if events is None else events
    with requests.get(
        f"{hub.url}/hub/api/users/{name}/server/progress",
        stream=True,
        timeout=timeout,
        headers={"Authorization": f"token {token}"},
    ) as resp:
        for line in resp.iter_lines():
            if line.startswith(b"data:"):
                event = json.loads(line[5:])
                events.append((time.time(), event))
                if (
                    event.get("ready")
                    or event.get("failed")
                    or time.monotonic() > deadline
                    or (until is not None and until())
                ):
                    break
    return events


def spawn_with_progress(hub, name, timeout=240):
    """Request ``name``'s server and follow its progress: ``(request wall time, status, [(time, event)])``."""
    token = user_token(hub, name)
    result = {}

    def post():
        result["t0"] = time.time()
        result["r"] = request_spawn(hub, name, token)

    poster = threading.Thread(target=post)
    poster.start()
    events = watch_progress(hub, name, token, timeout, until=lambda: not poster.is_alive())
    poster.join(timeout)
    return result["t0"], result["r"].status_code, events


# -- the hub's log ----------------------------------------------------------------

LOG_LINE = re.compile(r"^\[(\w) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ([^\] ]+)[^\]]*\] (.*)$")


def log_text(hub, since=0):
    """The hub's log (hub, service and sandboxes) from byte ``since``."""
    with open(hub.log_path, "rb") as f:
        f.seek(since)
        return f.read().decode(errors="replace")


def _parsed(text):
    """``[(wall time, source, message)]`` of log lines in JupyterHub's format."""
    out = []
    for line in text.splitlines():
        m = LOG_LINE.match(re.sub(r"\x1b\[[0-9;]*m", "", line))
        if m:
            stamp = datetime.strptime(m.group(2), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            out.append((stamp, m.group(3), m.group(4)))
    return out


def log_lines(hub, since=0):
    """``[(wall time, source, message)]`` of the hub's log, from byte ``since``."""
    return _parsed(log_text(hub, since))


def sandbox_log_lines(hub, name):
    """``[(wall time, source, message)]`` of the sandbox ``name``'s own log (``<state>/logs/sandboxes/``), where a
    sandbox writes instead of the hub's log."""
    from aifhub.isolation.sandbox_log import log_path

    try:
        return _parsed(log_path(hub.state_dir, name).read_text(errors="replace"))
    except OSError:
        return []


def log_size(hub):
    try:
        return hub.log_path.stat().st_size
    except FileNotFoundError:
        return 0
