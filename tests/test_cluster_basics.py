"""The cluster itself: the real API server's admission, the scheduler, the controllers, and the test
kubelet that runs pods for real. What aifhub's own cluster tests rely on, checked once."""

import json
import os
import socket
import time

import pytest
from clusterkit import restricted_pod, wait
from kubernetes import client
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.cluster

REPORT = (
    "import json, os, sys\n"
    "open('/dev/termination-log', 'w').write(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), "
    "'groups': os.getgroups(), 'devices': os.environ.get('NVIDIA_VISIBLE_DEVICES'), "
    "'hostname': os.uname().nodename, 'pod_ip': os.environ.get('POD_IP')}))\n"
)


@pytest.fixture(scope="module")
def kube(kube_cluster):
    return kube_cluster


@pytest.fixture(scope="module")
def ns(kube):
    name = kube.namespace("aifhub-basics")
    yield name
    kube.delete_namespace(name)


def local_only(kube):
    if kube.local is None:
        pytest.skip("checks the local cluster's simulated nodes")


def terminated(pod):
    return pod and pod["status"].get("phase") in ("Succeeded", "Failed")


def report_of(pod):
    return json.loads(pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"])


def test_nodes_advertise_gpus_and_mig_slices_as_the_gpu_operator_labels_them(kube):
    local_only(kube)
    nodes = {n.metadata.name: kube.dict(n) for n in kube.core.list_node().items}
    gpu, mig, cpu = nodes["gpu-0"], nodes["mig-0"], nodes["cpu-0"]
    for node in (gpu, mig, cpu):
        assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"
        lease = client.CoordinationV1Api(kube.api).read_namespaced_lease(node["metadata"]["name"], "kube-node-lease")
        assert lease.spec.holder_identity == node["metadata"]["name"]
    assert gpu["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert gpu["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    assert gpu["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in gpu["spec"]["taints"]
    assert mig["status"]["allocatable"]["nvidia.com/mig-1g.10gb"] == "7"
    assert mig["metadata"]["labels"]["nvidia.com/mig.config"] == "all-1g.10gb"
    assert "nvidia.com/gpu" not in {k for k, v in cpu["status"]["allocatable"].items() if v != "0"}
    assert not cpu["spec"].get("taints")


def test_pod_security_refuses_a_pod_that_drops_a_restricted_setting(kube, ns):
    body = restricted_pod("escalates", ["python", "-c", "pass"])
    body["spec"]["containers"][0]["securityContext"].pop("allowPrivilegeEscalation")
    with pytest.raises(ApiException) as refused:
        kube.core.create_namespaced_pod(ns, body)
    assert refused.value.status == 403
    message = json.loads(refused.value.body)["message"]
    assert 'violates PodSecurity "restricted:latest"' in message and "allowPrivilegeEscalation != false" in message
    root = restricted_pod("as-root", ["python", "-c", "pass"])
    root["spec"]["securityContext"]["runAsUser"] = 0
    with pytest.raises(ApiException) as refused:
        kube.core.create_namespaced_pod(ns, root)
    assert refused.value.status == 403 and "runAsUser=0" in json.loads(refused.value.body)["message"]


def test_a_restricted_pod_runs_as_its_user_and_reports_back(kube, ns):
    body = restricted_pod(
        "reporter",
        ["python", "-c", REPORT],
        container={"env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]},
    )
    kube.core.create_namespaced_pod(ns, body)
    pod = kube.wait_pod(ns, "reporter", terminated, 90)
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    report = report_of(pod)
    assert report["uid"] == 1000 and report["gid"] == 100 and 100 in report["groups"]
    assert report["hostname"] == "reporter" and report["pod_ip"] == pod["status"]["podIP"]
    assert pod["spec"]["nodeName"] == "cpu-0" or kube.local is None  # no GPU asked: not on a tainted GPU node


def test_gpu_pods_get_distinct_devices_and_the_third_one_waits_with_the_schedulers_reason(kube, ns):
    local_only(kube)

    def gpu_pod(name, resource="nvidia.com/gpu", selector=None):
        return restricted_pod(
            name,
            ["python", "-c", REPORT + "import time; time.sleep(60)"],
            container={"resources": {"limits": {resource: "1", "cpu": "100m", "memory": "64Mi"}}},
            nodeSelector=selector or {"nvidia.com/gpu.present": "true", "nvidia.com/mig.config": "all-disabled"},
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            terminationGracePeriodSeconds=1,
        )

    for name in ("gpu-a", "gpu-b", "gpu-c"):
        kube.core.create_namespaced_pod(ns, gpu_pod(name))
    running = [kube.wait_running(ns, name, 60) for name in ("gpu-a", "gpu-b")]
    assert {p["spec"]["nodeName"] for p in running} == {"gpu-0"}
    pending = kube.wait_pod(
        ns,
        "gpu-c",
        lambda p: any(
            c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
            for c in p["status"].get("conditions", [])
        ),
        30,
    )
    message = next(c["message"] for c in pending["status"]["conditions"] if c["type"] == "PodScheduled")
    assert "Insufficient nvidia.com/gpu" in message, message
    # the device plugin's part: each pod sees its own device
    kube.core.create_namespaced_pod(
        ns, gpu_pod("mig-a", "nvidia.com/mig-1g.10gb", {"nvidia.com/mig.config": "all-1g.10gb"})
    )
    mig = kube.wait_running(ns, "mig-a", 60)
    assert mig["spec"]["nodeName"] == "mig-0"
    # freeing one GPU schedules the waiting pod there
    kube.core.delete_namespaced_pod("gpu-a", ns)
    kube.wait_running(ns, "gpu-c", 60)
    for name in ("gpu-b", "gpu-c", "mig-a"):
        kube.core.delete_namespaced_pod(name, ns, grace_period_seconds=0)


def test_devices_differ_between_pods_on_one_node(kube, ns):
    local_only(kube)
    names = ["dev-a", "dev-b"]
    for name in names:
        kube.core.create_namespaced_pod(
            ns,
            restricted_pod(
                name,
                ["python", "-c", REPORT],
                container={"resources": {"limits": {"nvidia.com/mig-1g.10gb": "1"}}},
                nodeSelector={"nvidia.com/mig.config": "all-1g.10gb"},
                tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            ),
        )
    devices = [report_of(kube.wait_pod(ns, n, terminated, 60))["devices"] for n in names]
    assert all(d and d.startswith("MIG-") for d in devices) and devices[0] != devices[1], devices


def test_a_server_in_a_pod_is_reached_at_its_ip_and_deletion_stops_it(kube, ns):
    body = restricted_pod(
        "server",
        ["python", "-m", "http.server", "--bind", "0.0.0.0", "8080"],
        container={"ports": [{"containerPort": 8080}]},
        terminationGracePeriodSeconds=3,
    )
    kube.core.create_namespaced_pod(ns, body)
    pod = kube.wait_running(ns, "server", 60)
    ip = pod["status"]["podIP"]

    def answers():
        try:
            with socket.create_connection((ip, 8080), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                return s.recv(12).startswith(b"HTTP/1.0 200")
        except OSError:
            return False

    wait(answers, 30, f"the pod's server at {ip}:8080")
    started = time.monotonic()
    kube.core.delete_namespaced_pod("server", ns)  # SIGTERM, which http.server does not handle as pid 1: SIGKILL at 3 s
    wait(lambda: not kube._exists(kube.core.read_namespaced_pod, "server", ns), 30, "the deleted pod gone")
    assert time.monotonic() - started >= 2.5  # the grace period was given
    assert not answers()
    assert "Stopping container main" in " ".join(kube.events(ns, "server")) or kube.local is None


def test_jobs_and_replicasets_are_run_by_their_controllers(kube, ns):
    pod = restricted_pod("unused", ["python", "-c", "print('ok')"])
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "hello"},
        "spec": {"backoffLimit": 0, "template": {"spec": pod["spec"]}},
    }
    kube.batch.create_namespaced_job(ns, job)
    wait(
        lambda: (kube.batch.read_namespaced_job_status("hello", ns).status.succeeded or 0) == 1, 90, "the Job completed"
    )
    rs_pod = restricted_pod("unused", ["python", "-c", "import time; time.sleep(600)"], terminationGracePeriodSeconds=1)
    rs_pod["spec"]["restartPolicy"] = "Always"
    rs = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "pair"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "pair"}},
            "template": {"metadata": {"labels": {"app": "pair"}}, "spec": rs_pod["spec"]},
        },
    }
    kube.apps.create_namespaced_replica_set(ns, rs)

    def running_pods():
        return [
            p
            for p in kube.core.list_namespaced_pod(ns, label_selector="app=pair").items
            if p.status.phase == "Running" and not p.metadata.deletion_timestamp
        ]

    wait(lambda: len(running_pods()) == 2, 90, "two ReplicaSet pods running")
    kube.apps.patch_namespaced_replica_set("pair", ns, {"spec": {"replicas": 0}})
    wait(
        lambda: not kube.core.list_namespaced_pod(ns, label_selector="app=pair").items, 60, "the ReplicaSet's pods gone"
    )


def test_a_service_account_token_is_allowed_what_its_role_says_and_nothing_else(kube, ns, tmp_path):
    from clusterkit import Kube

    kube.service_account(ns, "reader", rules=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}])
    reader = Kube(kube.token_kubeconfig(tmp_path / "reader.kubeconfig", ns, "reader"))
    assert isinstance(reader.core.list_namespaced_pod(ns).items, list)
    with pytest.raises(ApiException) as forbidden:
        reader.core.list_namespaced_secret(ns)
    assert forbidden.value.status == 403
    assert f"system:serviceaccount:{ns}:reader" in json.loads(forbidden.value.body)["message"]


def test_a_pod_that_network_policy_cuts_off_has_no_network(kube, ns):
    kube.apply(
        [
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "isolated"},
                "spec": {"podSelector": {"matchLabels": {"net": "none"}}, "policyTypes": ["Ingress", "Egress"]},
            }
        ],
        ns,
    )
    probe = (
        "import socket, sys\n"
        f"host, port = {kube.server.split('//')[1].rsplit(':', 1)[0]!r}, {int(kube.server.rsplit(':', 1)[1])}\n"
        "try:\n    socket.create_connection((host, port), timeout=3); sys.exit(0)\n"
        "except OSError:\n    sys.exit(7)\n"
    )
    for name, labels in (("cut-off", {"net": "none"}), ("connected", {})):
        kube.core.create_namespaced_pod(ns, restricted_pod(name, ["python", "-c", probe], labels=labels))
    codes = {
        name: kube.wait_pod(ns, name, terminated, 60)["status"]["containerStatuses"][0]["state"]["terminated"][
            "exitCode"
        ]
        for name in ("cut-off", "connected")
    }
    if kube.local is None:
        pytest.skip(f"NetworkPolicy enforcement depends on the cluster's network plugin: {codes}")
    assert codes == {"cut-off": 7, "connected": 0}


@pytest.mark.skipif(os.geteuid() != 0, reason="the test kubelet runs containers as root")
def test_a_checkout_reached_through_a_link_runs_its_scripts_in_a_pod(tmp_path, monkeypatch):
    """#30 item 12: ``sys.prefix`` names the link while the environment's scripts name the real path on their
    first line; the test kubelet's image holds both, so a script of the environment runs in a pod."""
    import subprocess
    import sys
    from pathlib import Path

    from localcluster import runner

    real = Path(sys.prefix).resolve()
    link = tmp_path / "checkout"
    link.symlink_to(real.parent)
    monkeypatch.setattr(sys, "prefix", str(link / real.name))
    pod = {"metadata": {"name": "linked"}, "spec": {}}
    container = {"command": [str(link / real.name / "bin" / "pip"), "--version"]}
    argv = runner.bwrap_command(pod, container, [], {"PATH": "/usr/bin:/bin"}, isolated_network=True)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "pip" in out.stdout, out.stdout + out.stderr
