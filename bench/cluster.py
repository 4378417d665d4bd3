"""Workshop capacity on the cluster: learners log in at once on simulated GPU nodes, with the course's
user placeholders (room kept and the course's image pulled ahead of the session) against without.

Each side runs on a fresh local cluster (the real control plane built from its Go modules, and the test
kubelet's simulated GPU nodes, which run every pod for real in bubblewrap: see tests/localcluster), so
neither finds the other's images on its nodes. Pulling the course's image onto a node takes
``pull_seconds`` there, the first time, as a registry pull would. Every learner's pod is a real
single-user server, started by KubeSpawner through a real JupyterHub configured from the rendered z2jh
values; learners follow their progress streams as the spawn page does (bench/spawn.py's storm).
"""

import math
import os
import shutil
import sys
import time


from .hubs import REPO
from .spawn import spawn_storm

COURSE = "gpu-fundamentals"


class ClusterUnavailable(RuntimeError):
    """The local cluster cannot run here (not root, no bubblewrap, no control plane)."""


def _test_kit():
    """The cluster tests' own pieces: the local cluster, its client, the z2jh-configured hub."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import clusterkit
    import kubehub
    import localcluster

    return clusterkit, kubehub, localcluster


class ClusterHub:
    """A hub of the cluster tests, as bench/spawn.py drives a hub."""

    kind = "aifhub"

    def __init__(self, hub):
        self.hub = hub
        self.url = hub.url
        self.log_path = hub.log_path
        self.hub_port = hub.hub_port
        self.api = hub.api

    def token_for(self, name):
        return self.hub.token_for(name)


def _pools(learners, nodes):
    per_node = math.ceil(learners / nodes)
    return [
        {"name": "cpu", "preset": "cpu", "count": 1, "cpu": 16, "memory": "64Gi"},
        {
            "name": "gpu",
            "preset": "h100",
            "count": nodes,
            "gpus": per_node,
            "cpu": 8 * per_node,
            "memory": f"{32 * per_node}Gi",
            "pods": 4 * per_node + 10,
        },
    ]


def _placeholders_running(kube, ns):
    pods = kube.core.list_namespaced_pod(
        ns, label_selector=f"aifhub.io/component=placeholder,aifhub.io/course={COURSE}"
    )
    return sum(1 for p in pods.items if p.status.phase == "Running" and not p.metadata.deletion_timestamp)


def _prioritise_servers(cluster, hub):
    """On a real cluster the control plane and the hub have machines of their own; here every simulated node's
    pods share this machine's cores with them. Put the control plane, the hub and what it started (proxy,
    service) in the CPU group the embedded hub uses (weighing as much as a few busy processes), as
    ``aifhub up`` does for its hub, so that they are not starved by the pods. Returns how many were moved."""
    import psutil

    from aifhub.isolation.cgroups import prioritise_hub

    pids = [p.pid for p in cluster.control_plane.procs.values()]
    try:
        pids += [hub.proc.pid] + [c.pid for c in psutil.Process(hub.proc.pid).children(recursive=True)]
    except psutil.Error:
        pass
    return sum(1 for pid in pids if prioritise_hub(pid) is not None)


def _side(scratch, learners, nodes, pull_seconds, placeholders, timeout):
    """One side on a cluster of its own: the storm's figures, and how long the placeholders took to be ready."""
    clusterkit, kubehub, localcluster = _test_kit()
    cluster = localcluster.LocalCluster(scratch / "cluster", pools=_pools(learners, nodes), pull_seconds=pull_seconds)
    try:
        cluster.start()
    except localcluster.ClusterError as exc:
        raise ClusterUnavailable(f"the local cluster did not start: {exc}") from exc
    try:
        kube = clusterkit.Kube(cluster.kubeconfig, local=cluster)
        (scratch / "hub").mkdir(exist_ok=True)
        dep = clusterkit.deploy_aifhub(kube, "bench-warm" if placeholders else "bench-cold", scratch / "hub")
        ns, kubeconfig = dep["ns"], str(dep["kubeconfig"])
        hub = kubehub.Z2jhHub(
            dep["base"],
            kubeconfig,
            namespace=ns,
            env={"AIFHUB_GRADING_VOLUME": dep["volume"]},
            extra_config={
                # a workshop's settings (docs/kubernetes.md): every learner may start at once, and a server
                # that starts on a loaded node is waited for
                "JupyterHub.concurrent_spawn_limit": learners,
                "KubeSpawner.start_timeout": timeout,
                "KubeSpawner.http_timeout": timeout,
            },
            prepare_courses=clusterkit.with_session_now(COURSE, learners if placeholders else 0, open_to_all=True),
            service_args=[
                f"--GradingManager.kube_config={kubeconfig}",
                f"--GradingManager.kube_namespace={ns}",
                "--Placeholders.interval=2",
                "--Placeholders.scheduler_name=aifhub-user-scheduler",
            ],
        ).start()
        servers = _prioritise_servers(cluster, hub)
        try:
            hub.record_allocation(gpu_hours=10 * learners)  # holds of 4 GPU-hours (the course's max_session) each
            warm_s = None
            if placeholders:
                t = time.monotonic()
                clusterkit.wait(
                    lambda: _placeholders_running(kube, ns) >= learners, timeout, "the placeholders running"
                )
                warm_s = time.monotonic() - t
            storm = spawn_storm(ClusterHub(hub), users=learners, prefix="wl", timeout=timeout, course=COURSE)
            storm["placeholders_ready_s"] = warm_s
            storm["prioritised"] = servers
            storm["preempted"] = sum(1 for e in kube.core.list_namespaced_event(ns).items if e.reason == "Preempted")
            return storm
        finally:
            hub.stop()
    finally:
        cluster.stop()


def workshop_storm(scratch, learners=120, nodes=20, pull_seconds=30.0, timeout=900):
    """``learners`` log in at once on ``nodes`` GPU nodes (GPUs for exactly all of them): without placeholders,
    then with them; ``{"cold": storm, "warm": storm, ...}`` (storm: see :func:`bench.spawn.spawn_storm`)."""
    if os.geteuid() != 0:
        raise ClusterUnavailable("the local cluster's kubelet runs pods as their own users: run the benchmark as root")
    if shutil.which("bwrap") is None:
        raise ClusterUnavailable("the local cluster runs pods in bubblewrap: apt-get install bubblewrap")
    out = {"learners": learners, "nodes": nodes, "gpus": nodes * math.ceil(learners / nodes), "pull_s": pull_seconds}
    for side, placeholders in (("cold", False), ("warm", True)):
        (scratch / side).mkdir(parents=True, exist_ok=True)
        out[side] = _side(scratch / side, learners, nodes, pull_seconds, placeholders, timeout)
    return out
