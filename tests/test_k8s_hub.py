"""A real JupyterHub configured the z2jh way, with KubeSpawner pointed at an API server that is not there.

The hub loads the rendered values as the chart's hub configuration would
(``hub.config``, ``hub.services``, then ``hub.extraConfig``), the aifhub service
runs beside it, and a spawn goes through the form, admission and pod building
up to the Kubernetes API call, which fails with a clear message.
"""

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from hubrunner import PASSWORD, copy_courses, free_port

from aifhub.deploy.offline import write_dummy_kubeconfig

REPO = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "k8s-test-admin-" + secrets.token_hex(8)

HUB_CONFIG = '''\
# What the z2jh chart's hub configuration does with the rendered values, on one machine.
import os

import yaml

from aifhub.deploy import chart
from aifhub.hubside.embedded import proxy_command

values = yaml.safe_load(open(os.environ["TEST_VALUES"]))
c.merge(chart.hub_config(values))  # hub.config, hub.services and the singleuser settings

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

c.JupyterHub.services.append({"name": "test-admin", "api_token": os.environ["TEST_ADMIN_TOKEN"]})
c.JupyterHub.load_roles.append({"name": "admin", "services": ["test-admin"]})
'''


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    base = tmp_path_factory.mktemp("k8s-hub")
    proc = subprocess.run([sys.executable, "-m", "aifhub", "k8s", "render", "--out", str(base / "rendered"),
                           "--courses", str(REPO / "courses")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    state = base / "state"
    state.mkdir()
    (base / "jupyterhub_config.py").write_text(HUB_CONFIG)
    port = free_port()
    env = dict(
        os.environ,
        TEST_VALUES=str(base / "rendered" / "values.yaml"), TEST_PORT=str(port), TEST_HUB_PORT=str(free_port()),
        TEST_PROXY_PORT=str(free_port()), TEST_PASSWORD=PASSWORD, TEST_ADMIN_TOKEN=ADMIN_TOKEN,
        # what hub.extraEnv gives the hub pod, with local paths and SQLite for the ledger
        POD_IP="127.0.0.1", AIFHUB_SERVICE_PORT=str(free_port()), AIFHUB_INTERNAL_TOKEN=secrets.token_hex(16),
        AIFHUB_STATE_DIR=str(state), AIFHUB_COURSES=str(copy_courses(base / "courses")),
        AIFHUB_IMAGES=str(REPO / "sandbox_images"), AIFHUB_METER_INTERVAL="2",
        KUBECONFIG=write_dummy_kubeconfig(base / "kubeconfig"),
    )
    env.pop("AIFHUB_DB_URL", None)
    log_path = base / "hub.log"
    log = open(log_path, "wb")
    p = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(base / "jupyterhub_config.py")],
                         cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert p.poll() is None, f"the hub exited early:\n{log_path.read_text()[-3000:]}"
        try:
            r = requests.get(f"{url}/services/aifhub/api/v1/courses", headers={"Authorization": f"token {ADMIN_TOKEN}"}, timeout=5)
            if r.status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, f"hub or service not up in 60 s:\n{log_path.read_text()[-3000:]}"
        time.sleep(0.3)
    yield url, log_path
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(20)
    except subprocess.TimeoutExpired:
        p.kill()
    log.close()


def api(url, method, path, **kw):
    return requests.request(method, f"{url}/hub/api/{path}", headers={"Authorization": f"token {ADMIN_TOKEN}"}, timeout=60, **kw)


def login(url, name):
    s = requests.Session()
    s.get(f"{url}/hub/login", timeout=30)
    r = s.post(f"{url}/hub/login", data={"username": name, "password": PASSWORD, "_xsrf": s.cookies.get("_xsrf")}, timeout=30)
    assert r.status_code == 200, r.text[:500]
    return s


def record_allocation(url):
    """What an admin does on a new deployment: record the allocation that pays for the example courses."""
    r = requests.post(f"{url}/services/aifhub/api/v1/allocations", headers={"Authorization": f"token {ADMIN_TOKEN}"},
                      json={"id": "EHPC-AIF-2026-PG01", "gpu_hours": 100, "title": "k8s test"}, timeout=30)
    assert r.status_code in (201, 404, 409), r.text  # 404: a service without allocations admits without one


def test_spawn_form_admission_and_pod_up_to_the_api_call(hub):
    url, log_path = hub
    form = login(url, "learner1").get(f"{url}/hub/spawn", timeout=30)
    assert form.status_code == 200
    assert 'name="course" value="gpu-fundamentals"' in form.text and 'value="dl-basics"' in form.text
    assert "GPU gpu × 1" in form.content.decode()
    assert "not isolated" not in form.text  # pods are isolated sandboxes

    assert api(url, "POST", "users/learner1").status_code in (201, 409)
    record_allocation(url)
    started = time.monotonic()
    r = api(url, "POST", "users/learner1/server", json={"course": "gpu-fundamentals"})
    assert time.monotonic() - started < 30
    assert r.status_code == 503, r.text
    message = r.json()["message"]
    assert "could not be created" in message and "API server cannot be reached" in message, message
    assert "Traceback" not in message

    log = log_path.read_text(errors="replace")
    # admission ran (the service answered), then KubeSpawner's manifest was built for the course
    built = re.search(r"Pod jupyter-learner1 for learner1 \(course gpu-fundamentals\): image (\S+), limits (.*)", log)
    assert built, log[-3000:]
    assert built.group(1) == "aifhub/sandbox-pytorch-cuda:2026.12.0"
    assert "'nvidia.com/gpu': '1'" in built.group(2) and "aifhub-sandbox-gpu" in built.group(2)
    assert not re.search(r"\b500 POST /hub/api/users/learner1/server", log)
    assert api(url, "GET", "users/learner1").json()["servers"] == {}

    # the failed spawn was released: the next one is admitted again and fails the same clean way
    r = api(url, "POST", "users/learner1/server", json={"course": "dl-basics"})
    assert r.status_code == 503 and "API server" in r.json()["message"], r.text
    assert "Pod jupyter-learner1 for learner1 (course dl-basics): image aifhub/sandbox-cpu-base" in log_path.read_text()
    last = log_path.read_text().split("(course dl-basics)")[-1].splitlines()[0]
    assert "nvidia.com" not in last and "aifhub-sandbox-cpu" in last  # nothing of the GPU course on the reused spawner


def test_refusals_come_from_the_service(hub):
    url, _ = hub
    assert api(url, "POST", "users/stranger").status_code in (201, 409)
    r = api(url, "POST", "users/stranger/server", json={"course": "gpu-fundamentals"})
    assert r.status_code == 403, r.text  # a roster course: admission refuses before any pod is built
    r = api(url, "POST", "users/stranger/server", json={"course": "Bad Id"})
    assert r.status_code == 400 and "Invalid course id" in r.json()["message"]
