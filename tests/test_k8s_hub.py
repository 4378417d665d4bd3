"""A real JupyterHub configured the z2jh way, with KubeSpawner pointed at an API server that is not there.

The hub loads the rendered values as the chart's hub configuration would
(``hub.config``, ``hub.services``, then ``hub.extraConfig``), the aifhub service
runs beside it, and a spawn goes through the form, admission and pod building
up to the Kubernetes API call, which fails with a clear message.
"""

import re
import time

import pytest
from kubehub import Z2jhHub

from aifhub.deploy.offline import write_dummy_kubeconfig


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    base = tmp_path_factory.mktemp("k8s-hub")
    hub = Z2jhHub(base, write_dummy_kubeconfig(base / "kubeconfig")).start()
    yield hub
    hub.stop()


def test_spawn_form_admission_and_pod_up_to_the_api_call(hub):
    url, log_path = hub.url, hub.log_path
    form = hub.login("learner1").get(f"{url}/hub/spawn", timeout=30)
    assert form.status_code == 200
    assert 'name="course" value="gpu-fundamentals"' in form.text and 'value="dl-basics"' in form.text
    assert "GPU gpu × 1" in form.content.decode()
    assert "not isolated" not in form.text  # pods are isolated sandboxes

    assert hub.api("POST", "users/learner1").status_code in (201, 409)
    hub.record_allocation()
    started = time.monotonic()
    r = hub.api("POST", "users/learner1/server", json={"course": "gpu-fundamentals"})
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
    assert hub.api("GET", "users/learner1").json()["servers"] == {}

    # the failed spawn was released: the next one is admitted again and fails the same clean way
    r = hub.api("POST", "users/learner1/server", json={"course": "dl-basics"})
    assert r.status_code == 503 and "API server" in r.json()["message"], r.text
    assert "Pod jupyter-learner1 for learner1 (course dl-basics): image aifhub/sandbox-cpu-base" in log_path.read_text()
    last = log_path.read_text().split("(course dl-basics)")[-1].splitlines()[0]
    assert "nvidia.com" not in last and "aifhub-sandbox-cpu" in last  # nothing of the GPU course on the reused spawner


def test_refusals_come_from_the_service(hub):
    assert hub.api("POST", "users/stranger").status_code in (201, 409)
    r = hub.api("POST", "users/stranger/server", json={"course": "gpu-fundamentals"})
    assert r.status_code == 403, r.text  # a roster course: admission refuses before any pod is built
    r = hub.api("POST", "users/stranger/server", json={"course": "Bad Id"})
    assert r.status_code == 400 and "Invalid course id" in r.json()["message"]
