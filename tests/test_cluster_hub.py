"""End to end on the cluster path: a real JupyterHub with aifhub-kube (KubeSandboxSpawner), configured from
the rendered z2jh values, spawning learners' pods into a real cluster.

KubeSpawner acts with the hub's service-account token under the chart's hub Role; the namespace enforces
the 'restricted' Pod Security Standard; the pods are scheduled by the real scheduler (the chart's user
scheduler profile) and run by the test kubelet (or an operator's cluster, AIFHUB_TEST_KUBECONFIG).
"""

import json
import subprocess
import sys
import threading
import time

import pytest
from clusterkit import CHART_HUB_ROLE_RULES, restricted_pod, wait
from kubehub import Z2jhHub

from aifhub.kube import manifests

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def deployment(kube_cluster, tmp_path_factory):
    """The namespace and what the operator applies before installing the chart (k8s/README.md, step 5)."""
    kube = kube_cluster
    ns = kube.namespace("aifhub-hub")
    kube.apply(manifests.priority_classes())
    kube.apply(
        [manifests.grading_network_policy(ns), manifests.gradebook_network_policy(ns)]
        + manifests.grading_rbac(namespace=ns),
        ns,
    )
    kube.service_account(ns, "hub", rules=CHART_HUB_ROLE_RULES)
    base = tmp_path_factory.mktemp("cluster-hub")
    yield {
        "kube": kube,
        "ns": ns,
        "kubeconfig": kube.token_kubeconfig(base / "hub-sa.kubeconfig", ns, "hub"),
        "base": base,
    }
    kube.delete_namespace(ns)


@pytest.fixture(scope="module")
def hub(deployment):
    hub = Z2jhHub(
        deployment["base"],
        deployment["kubeconfig"],
        namespace=deployment["ns"],
        extra_config={"KubeSpawner.start_timeout": 120},
    ).start()
    hub.record_allocation()
    yield hub
    hub.stop()


def pod_of(deployment, name):
    return deployment["kube"].pod(deployment["ns"], f"jupyter-{name}")


def test_a_cpu_course_from_the_spawn_form_runs_a_cell_in_its_pod(hub, deployment):
    hub.spawn_from_form("learner3", "dl-basics")
    hub.wait_ready("learner3")
    pod = pod_of(deployment, "learner3")
    spec = pod["spec"]
    assert pod["status"]["phase"] == "Running" and spec["nodeName"]
    assert spec["schedulerName"] == "aifhub-user-scheduler"
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["automountServiceAccountToken"] is False
    assert not [k for k in spec["containers"][0]["resources"]["limits"] if k.startswith("nvidia.com/")]
    assert pod["metadata"]["labels"]["aifhub.io/course"] == "dl-basics"
    out = hub.run_in_kernel(
        "learner3", "import os, socket; print(os.getuid(), os.environ['AIFHUB_COURSE'], socket.gethostname())"
    )
    assert out.split() == ["1000", "dl-basics", "jupyter-learner3"], out
    # the course materials reached the pod's volume (an init container fetched them), and nothing instructors keep
    assert [c["name"] for c in spec["initContainers"]] == ["course-materials"]
    listing = "import os; print(sorted(f for f in os.listdir(os.environ['HOME']) if not f.startswith('.')))"
    files = json.loads(hub.run_in_kernel("learner3", listing).replace("'", '"'))
    assert {"01-digits-logistic.ipynb", "02-mlp-from-scratch.ipynb", "README.md"} <= set(files), files
    assert not {"source", "course.yaml"} & set(files), files
    # the learner's edit survives a restart: materials never replace what is there
    hub.run_in_kernel("learner3", "open('01-digits-logistic.ipynb', 'w').write('my own work')")
    hub.stop_server("learner3")
    deployment["kube"].wait_pod(deployment["ns"], "jupyter-learner3", lambda p: p is None, 60, "the pod deleted")
    hub.api("POST", "users/learner3/server", json={"course": "dl-basics"})
    hub.wait_ready("learner3")
    assert hub.run_in_kernel("learner3", "print(open('01-digits-logistic.ipynb').read())").strip() == "my own work"
    hub.stop_server("learner3")


def test_a_gpu_course_gets_a_gpu_node_and_its_device(hub, deployment):
    hub.spawn_from_form("learner1", "gpu-fundamentals")
    hub.wait_ready("learner1")
    pod = pod_of(deployment, "learner1")
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    node = deployment["kube"].dict(deployment["kube"].core.read_node(pod["spec"]["nodeName"]))
    assert node["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    out = hub.run_in_kernel("learner1", "import os, json; print(json.dumps(dict(os.environ)))")
    env = json.loads(out)
    assert env["AIFHUB_COURSE"] == "gpu-fundamentals" and env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    if deployment["kube"].local is not None:
        assert env["NVIDIA_VISIBLE_DEVICES"].startswith("GPU-")  # the device plugin's (here: the test kubelet's) choice
    hub.stop_server("learner1")


def gpu_holder(name):
    """Another learner's GPU sandbox: same priority as aifhub's, so the scheduler cannot evict it for ours."""
    return restricted_pod(
        name,
        ["python", "-c", "import time; time.sleep(3600)"],
        container={"resources": {"limits": {"nvidia.com/gpu": "1", "cpu": "100m", "memory": "64Mi"}}},
        nodeSelector={"nvidia.com/gpu.present": "true"},
        priorityClassName="aifhub-sandbox-gpu",
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        terminationGracePeriodSeconds=1,
    )


def usage(hub, user, course):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "aifhub",
            "usage",
            "report",
            "--format",
            "json",
            "--course",
            course,
            "--user",
            user,
            "--state-dir",
            str(hub.state),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["sessions"]


def test_with_no_free_gpu_the_pod_waits_with_the_schedulers_reason_and_the_wait_is_not_charged(hub, deployment):
    kube, ns = deployment["kube"], deployment["ns"]
    if kube.local is None:
        pytest.skip("fills the local cluster's GPU node; an operator's cluster has its own number of GPUs")
    holders = [f"holder-{i}" for i in range(2)]  # the GPU node has two GPUs
    for name in holders:
        kube.core.create_namespaced_pod(ns, gpu_holder(name))
    for name in holders:
        kube.wait_running(ns, name, 60)
    admitted = time.monotonic()
    spawn = threading.Thread(
        target=lambda: hub.api("POST", "users/learner2/server", json={"course": "gpu-fundamentals"})
    )
    spawn.start()
    wait(lambda: (hub.server_model("learner2") or {}).get("pending") == "spawn", 30, "learner2's spawn pending")
    # (a first word may be about the learner's new volume, not bound yet; then the GPUs)
    events = hub.progress("learner2", until=lambda e: "Insufficient nvidia.com/gpu" in e.get("message", ""), timeout=90)
    waiting = events[-1]["message"]
    assert waiting.startswith("Waiting for room on the cluster (the scheduler says: 0/3 nodes are available:"), waiting
    assert kube.pod(ns, "jupyter-learner2")["status"]["phase"] == "Pending"
    time.sleep(8)  # several metering ticks (every 2 s here) while the pod waits
    [session] = usage(hub, "learner2", "gpu-fundamentals")
    assert session["state"] == "active" and session["gpu_ms"] == 0, session
    pending_s = time.monotonic() - admitted

    kube.core.delete_namespaced_pod(holders[0], ns)  # a GPU frees up: the waiting pod gets it
    freed = time.monotonic()
    hub.wait_ready("learner2", timeout=120)
    spawn.join()
    time.sleep(4)
    hub.stop_server("learner2")
    stopped = time.monotonic()
    [session] = usage(hub, "learner2", "gpu-fundamentals")
    assert session["state"] == "ended" and session["gpu_ms"] > 0, session
    assert session["gpu_ms"] <= (stopped - freed + 2) * 1000, (session, stopped - freed, pending_s)  # from running on
    kube.core.delete_namespaced_pod(holders[1], ns, grace_period_seconds=0)


def test_a_course_over_its_resourcequota_is_refused_with_a_clear_message_and_nothing_charged(hub, deployment):
    """The namespace's ResourceQuota (here: no GPU at all for sandboxes) is the API server's to enforce: the
    pod is refused at admission, and the learner is told their course has used up its share, not a bare 403."""
    kube, ns = deployment["kube"], deployment["ns"]
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "gpu-cap"},
        "spec": {"hard": {"requests.nvidia.com/gpu": "0"}},
    }
    kube.core.create_namespaced_resource_quota(ns, quota)
    try:  # the quota controller must have counted it, or admission refuses everything with "status unknown"
        wait(
            lambda: (kube.dict(kube.core.read_namespaced_resource_quota("gpu-cap", ns)).get("status") or {}).get(
                "hard"
            ),
            30,
            "the quota's status",
        )
        before = {s["session"] for s in usage(hub, "learner1", "gpu-fundamentals")}
        answer = hub.api("POST", "users/learner1/server", json={"course": "gpu-fundamentals"}, timeout=120)
        if answer.status_code == 202:  # still starting after the hub's slow-spawn wait: the failure comes as an event
            events = hub.progress("learner1", timeout=120)
            message = events[-1].get("message", "")
            assert events[-1].get("failed"), events
        else:
            message = answer.json().get("message", "")
            assert answer.status_code >= 400, answer.text
        assert "Your course has used up its share of the cluster right now" in message, message
        assert "exceeded quota: gpu-cap" in message and "nvidia.com/gpu" in message, message
        wait(lambda: not (hub.server_model("learner1") or {}).get("pending"), 30, "the failed spawn to end")
        kube.wait_pod(ns, "jupyter-learner1", lambda p: p is None, 30, "no pod")
        sessions = usage(hub, "learner1", "gpu-fundamentals")
        new = [s for s in sessions if s["session"] not in before]  # the admission's hold for the refused pod, if any
        assert all(s["state"] != "active" and s["gpu_ms"] == 0 for s in new), new
    finally:
        kube.core.delete_namespaced_resource_quota("gpu-cap", ns)
    # the quota gone, the same learner starts the same course
    hub.api("POST", "users/learner1/server", json={"course": "gpu-fundamentals"})
    hub.wait_ready("learner1")
    hub.stop_server("learner1")
