"""A real JupyterHub configured the z2jh way, on this machine, for the Kubernetes tests.

The hub loads the rendered values as the chart's hub configuration would (``hub.config``,
``hub.services``, then ``hub.extraConfig``), and the aifhub service runs beside it, as in the
hub pod. KubeSpawner talks to whatever cluster the kubeconfig names: an unreachable one
(test_k8s_hub) or a real one (the cluster tests, with the hub's service-account token).
"""

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from hubrunner import PASSWORD, copy_courses, free_port

REPO = Path(__file__).resolve().parent.parent

HUB_CONFIG = """\
# What the z2jh chart's hub configuration does with the rendered values, on one machine.
import json
import os

import yaml

from aifhub.deploy import chart
from aifhub.hubside.embedded import proxy_command

values = yaml.safe_load(open(os.environ["TEST_VALUES"]))
c.merge(chart.hub_config(values, namespace=os.environ.get("TEST_NAMESPACE", "aifhub")))  # hub.config, hub.services, singleuser

# the chart's own hub settings, with local addresses (the chart: hub.db.url is PostgreSQL)
state = os.environ["AIFHUB_STATE_DIR"]
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = int(os.environ["TEST_PORT"])
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(os.environ["TEST_HUB_PORT"])
c.JupyterHub.db_url = f"sqlite:///{state}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = f"{state}/cookie_secret"
c.JupyterHub.cleanup_servers = False
c.ConfigurableHTTPProxy.command = proxy_command()
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{os.environ['TEST_PROXY_PORT']}"
c.ConfigurableHTTPProxy.pid_file = f"{state}/proxy.pid"
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = os.environ["TEST_PASSWORD"]
c.Authenticator.allow_all = True

for snippet in chart.extra_config_snippets(values):  # hub.extraConfig, in the chart's order
    exec(snippet, {"c": c})

for service in c.JupyterHub.services:  # the test's own service settings (a kubeconfig instead of the pod's account)
    if service["name"] == "aifhub" and os.environ.get("TEST_SERVICE_ARGS"):
        service["command"] = list(service["command"]) + json.loads(os.environ["TEST_SERVICE_ARGS"])
c.JupyterHub.services.append({"name": "test-admin", "api_token": os.environ["TEST_ADMIN_TOKEN"]})
c.JupyterHub.load_roles.append({"name": "admin", "services": ["test-admin"]})
for key, value in json.loads(os.environ.get("TEST_EXTRA_CONFIG", "{}")).items():  # the test's own settings
    section, trait = key.split(".")
    setattr(getattr(c, section), trait, value)
"""


class Z2jhHub:
    """``Z2jhHub(base, kubeconfig).start()``: render, configure and start the hub; ``url``, ``log_path``."""

    def __init__(
        self,
        base,
        kubeconfig,
        namespace="aifhub",
        extra_config=None,
        env=None,
        render_args=(),
        service_args=(),
        prepare_courses=None,
    ):
        self.base = Path(base)
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.extra_config = extra_config or {}
        self.env = env or {}
        self.render_args = list(render_args)
        self.service_args = list(service_args)
        self.prepare_courses = prepare_courses
        self.admin_token = "k8s-test-admin-" + secrets.token_hex(8)
        self.proc = None

    def start(self, timeout=90):
        import json

        base = self.base
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "aifhub",
                "k8s",
                "render",
                "--out",
                str(base / "rendered"),
                "--courses",
                str(REPO / "courses"),
                *self.render_args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        self.state = base / "state"
        self.state.mkdir(exist_ok=True)
        (base / "jupyterhub_config.py").write_text(HUB_CONFIG)
        port = free_port()
        self.courses = copy_courses(base / "courses")
        if self.prepare_courses:
            self.prepare_courses(self.courses)
        env = dict(
            os.environ,
            TEST_VALUES=str(base / "rendered" / "values.yaml"),
            TEST_PORT=str(port),
            TEST_HUB_PORT=str(free_port()),
            TEST_PROXY_PORT=str(free_port()),
            TEST_PASSWORD=PASSWORD,
            TEST_ADMIN_TOKEN=self.admin_token,
            TEST_NAMESPACE=self.namespace,
            TEST_EXTRA_CONFIG=json.dumps(self.extra_config),
            TEST_SERVICE_ARGS=json.dumps(self.service_args),
            # what hub.extraEnv gives the hub pod, with local paths and SQLite for the ledger
            POD_IP="127.0.0.1",
            AIFHUB_SERVICE_PORT=str(free_port()),
            AIFHUB_INTERNAL_TOKEN=secrets.token_hex(16),
            AIFHUB_STATE_DIR=str(self.state),
            AIFHUB_COURSES=str(self.courses),
            AIFHUB_IMAGES=str(REPO / "sandbox_images"),
            AIFHUB_METER_INTERVAL="2",
            KUBECONFIG=str(self.kubeconfig),
            **self.env,
        )
        env.pop("AIFHUB_DB_URL", None)
        self.service_port = int(env["AIFHUB_SERVICE_PORT"])
        self.hub_port = int(env["TEST_HUB_PORT"])
        # pods reach the service through the hub's Service; the local cluster's pods share this machine's loopback
        env.setdefault("AIFHUB_EXCHANGE_URL", f"http://127.0.0.1:{self.service_port}/services/aifhub/")
        self.log_path = base / "hub.log"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(base / "jupyterhub_config.py")],
            cwd=base,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"the hub exited early:\n{self.log_path.read_text()[-3000:]}"
            try:
                r = self.service("GET", "courses")
                if r.status_code == 200:
                    return self
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, (
                f"hub or service not up in {timeout} s:\n{self.log_path.read_text()[-3000:]}"
            )
            time.sleep(0.3)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()

    def api(self, method, path, token=None, **kw):
        return requests.request(
            method,
            f"{self.url}/hub/api/{path}",
            headers={"Authorization": f"token {token or self.admin_token}"},
            timeout=kw.pop("timeout", 60),
            **kw,
        )

    def service(self, method, path, token=None, **kw):
        return requests.request(
            method,
            f"{self.url}/services/aifhub/api/v1/{path}",
            headers={"Authorization": f"token {token or self.admin_token}"},
            timeout=kw.pop("timeout", 90),
            **kw,
        )

    def login(self, name):
        s = requests.Session()
        s.get(f"{self.url}/hub/login", timeout=30)
        r = s.post(
            f"{self.url}/hub/login",
            data={"username": name, "password": PASSWORD, "_xsrf": s.cookies.get("_xsrf")},
            timeout=30,
        )
        assert r.status_code == 200, r.text[:500]
        return s

    def token_for(self, name):
        self.api("POST", f"users/{name}")
        r = self.api("POST", f"users/{name}/tokens", json={"note": "test"})
        assert r.status_code in (200, 201), r.text
        return r.json()["token"]

    def record_allocation(self, gpu_hours=100):
        """What an admin does on a new deployment: record the allocation that pays for the example courses."""
        r = self.service(
            "POST", "allocations", json={"id": "EHPC-AIF-2026-PG01", "gpu_hours": gpu_hours, "title": "k8s test"}
        )
        assert r.status_code in (201, 404, 409), r.text  # 404: a service without allocations admits without one

    def log_text(self):
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines=40):
        """The hub's log without the polling noise, for failure messages."""
        noise = ("GET /hub/api/users", "GET /services/aifhub/api/v1/courses", "/hub/health")
        return "\n".join([line for line in self.log_text().splitlines() if not any(n in line for n in noise)][-lines:])

    # -- servers, as a learner's browser sees them ----------------------------------

    def server_model(self, name):
        return self.api("GET", f"users/{name}").json()["servers"].get("")

    def wait_ready(self, name, timeout=180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.server_model(name)
            if model and model["ready"]:
                return model
            if model is None:
                raise AssertionError(f"{name}'s server stopped while starting:\n{self.log_tail()}")
            time.sleep(0.5)
        raise AssertionError(f"{name}'s server not ready after {timeout}s")

    def stop_server(self, name, timeout=90):
        r = self.api("DELETE", f"users/{name}/server")
        assert r.status_code in (202, 204), r.text
        deadline = time.monotonic() + timeout
        while self.server_model(name) is not None:
            assert time.monotonic() < deadline, f"{name}'s server did not stop"
            time.sleep(0.3)

    def spawn_from_form(self, name, course):
        """What the learner's browser does: the spawn form, posted with the course chosen."""
        session = self.login(name)
        form = session.get(f"{self.url}/hub/spawn", timeout=30)
        assert form.status_code == 200 and f'value="{course}"' in form.text, form.text[:2000]
        r = session.post(
            f"{self.url}/hub/spawn",
            data={"course": course, "_xsrf": session.cookies.get("_xsrf")},
            allow_redirects=False,
            timeout=60,
        )
        assert r.status_code == 302, (r.status_code, r.text[:2000])
        return session

    def progress(self, name, until=lambda event: event.get("ready") or event.get("failed"), timeout=180):
        """The progress stream of ``name``'s starting server, as the spawn page reads it, until ``until``."""
        events = []
        with requests.get(
            f"{self.url}/hub/api/users/{name}/server/progress",
            stream=True,
            timeout=timeout,
            headers={"Authorization": f"token {self.admin_token}"},
        ) as resp:
            for line in resp.iter_lines():
                if line.startswith(b"data:"):
                    import json

                    events.append(json.loads(line[5:]))
                    if until(events[-1]):
                        break
        return events

    def run_in_kernel(self, name, code, timeout=90):
        """Execute ``code`` in a new kernel of ``name``'s server (through the proxy, as JupyterLab does)."""
        from kernelclient import execute

        return execute(self.url, f"/user/{name}/", self.token_for(name), code, timeout)
