"""Placeholders for a scheduled course session on the cluster: the service keeps room (and the course's image) on
the course's GPU pool ahead of the session, paid by the course; learners' pods take it through the real
scheduler's preemption, and the placeholders shrink as learners come."""

import json
import subprocess
import sys

import pytest
from clusterkit import audit_calls, deploy_aifhub, wait, with_session_now
from kubehub import Z2jhHub

from aifhub.kube import manifests
from aifhub.kube.placeholders import replicaset_name

pytestmark = pytest.mark.cluster
COURSE = "gpu-fundamentals"


@pytest.fixture(scope="module")
def deployment(kube_cluster, tmp_path_factory):
    if kube_cluster.local is None:
        pytest.skip("fills the local cluster's GPU node with placeholders")
    deployment = deploy_aifhub(kube_cluster, "aifhub-warm", tmp_path_factory.mktemp("cluster-warm"))
    yield deployment
    kube_cluster.delete_namespace(deployment["ns"])


@pytest.fixture(scope="module")
def hub(deployment):
    ns, kubeconfig = deployment["ns"], str(deployment["kubeconfig"])
    hub = Z2jhHub(
        deployment["base"],
        kubeconfig,
        namespace=ns,
        env={"AIFHUB_GRADING_VOLUME": deployment["volume"]},
        extra_config={"KubeSpawner.start_timeout": 120},
        prepare_courses=with_session_now(COURSE, 2),
        service_args=[
            f"--GradingManager.kube_config={kubeconfig}",
            f"--GradingManager.kube_namespace={ns}",
            "--Placeholders.interval=2",
            "--Placeholders.scheduler_name=aifhub-user-scheduler",
        ],
    ).start()
    hub.record_allocation()
    yield hub
    hub.stop()


def placeholders(kube, ns, running_only=True):
    pods = kube.core.list_namespaced_pod(
        ns, label_selector=f"aifhub.io/component=placeholder,aifhub.io/course={COURSE}"
    ).items
    return [p for p in pods if not p.metadata.deletion_timestamp and (p.status.phase == "Running" or not running_only)]


def usage(hub, user):
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
            COURSE,
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


def test_placeholders_hold_the_gpus_and_learners_take_them_by_preemption(hub, deployment):
    kube, ns = deployment["kube"], deployment["ns"]
    wait(lambda: len(placeholders(kube, ns)) == 2, 90, "two placeholders running")
    held = placeholders(kube, ns)
    assert {p.spec.node_name for p in held} == {"gpu-0"}  # the GPU pool's node: both its GPUs held
    assert all(
        p.spec.priority == -10 and p.spec.containers[0].resources.requests["nvidia.com/gpu"] == "1" for p in held
    )
    assert held[0].spec.containers[0].image.endswith("sandbox-pytorch-cuda:2026.12.0")  # the course's image, pulled
    wait(lambda: any(s["gpu_ms"] > 0 for s in usage(hub, "aifhub-warm")), 30, "warm time charged to the course")

    hub.api("POST", "users/learner1/server", json={"course": COURSE})
    hub.wait_ready("learner1", timeout=120)
    pod = kube.pod(ns, "jupyter-learner1")
    assert pod["spec"]["nodeName"] == "gpu-0"  # room was there: a placeholder made way
    evicted = [e for e in kube.core.list_namespaced_event(ns).items if e.reason == "Preempted"]
    assert [e.message for e in evicted] == [f"Preempted by pod {pod['metadata']['uid']} on node gpu-0"]
    # one learner came of the two expected: one placeholder is left, nothing pending behind it
    wait(
        lambda: kube.apps.read_namespaced_replica_set(replicaset_name(COURSE), ns).spec.replicas == 1,
        30,
        "the placeholders shrunk to one",
    )
    wait(lambda: len(placeholders(kube, ns, running_only=False)) == 1, 30, "one placeholder left")
    assert [s["state"] for s in usage(hub, "learner1")] == ["active"]

    hub.api("POST", "users/learner2/server", json={"course": COURSE})
    hub.wait_ready("learner2", timeout=120)
    wait(
        lambda: kube.apps.read_namespaced_replica_set(replicaset_name(COURSE), ns).spec.replicas == 0,
        30,
        "no placeholder needed once all expected learners came",
    )
    wait(lambda: not any(s["state"] == "active" for s in usage(hub, "aifhub-warm")), 30, "warm sessions settled")
    for name in ("learner1", "learner2"):
        hub.stop_server(name)

    calls = audit_calls(kube, f"system:serviceaccount:{ns}:hub")
    ours = [c for c in calls if c["resource"] == "replicasets"]
    assert ours and all(c["code"] < 400 for c in ours), ours
    allowed = {(verb) for rule in manifests.placeholder_rbac(ns)[0]["rules"] for verb in rule["verbs"]}
    assert {c["verb"] for c in ours} <= allowed
