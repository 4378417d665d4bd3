"""A whole local cluster: the control plane, the objects a kubeadm cluster starts with that the
test kubelet needs (its RBAC, a default StorageClass), and the test kubelet with its nodes."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .controlplane import ClusterError, ControlPlane, _die_with_parent
from .nodes import PROVISIONER, pool_nodes
from .rest import Api, ApiError

STORAGE_CLASS = "aifhub-test-local"

# The nodes the cluster tests run on: CPU nodes, full H100s (two per node, so that tests can use
# them up), and one H100 split into seven 1g.10gb MIG slices.
TEST_POOLS = [
    {"name": "cpu", "preset": "cpu", "count": 1, "cpu": 16, "memory": "64Gi"},
    {"name": "gpu", "preset": "h100", "count": 1, "gpus": 2, "cpu": 32, "memory": "256Gi"},
    {"name": "mig", "preset": "mig-1g.10gb", "count": 1, "gpus": 1, "cpu": 32, "memory": "256Gi"},
]

KUBELET_ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "metadata": {"name": "aifhub-test-kubelet"},
    "rules": [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["create", "get", "list", "watch", "patch", "update"]},
        {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch", "update"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete"]},
        {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch", "update"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
        {
            "apiGroups": [""],
            "resources": ["configmaps", "secrets", "persistentvolumeclaims", "services", "endpoints"],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": ["create", "get", "list", "watch", "delete"]},
        {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create", "get", "patch", "update"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["get", "list", "watch"]},
    ],
}


class LocalCluster:
    """``LocalCluster(state_dir).start()``; ``kubeconfig`` is the admin's; ``stop()`` ends it all."""

    def __init__(self, state_dir, pools=None, pull_seconds=0.0, bin_dir=None):
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o711)  # pods' volumes are below; pods run as other users
        self.pools = pools or TEST_POOLS
        self.pull_seconds = pull_seconds
        self.control_plane = ControlPlane(self.dir / "control-plane", bin_dir)
        self.kubelet = None
        self.timings = {}

    @property
    def kubeconfig(self):
        return self.control_plane.kubeconfig

    def admin_api(self):
        cp = self.control_plane
        cert, key = cp.certs["admin"]
        return Api(cp.server, cp.ca.cert_path, cert, key)

    def bootstrap(self):
        api = self.admin_api()
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "aifhub-test-kubelet"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "aifhub-test-kubelet"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "aifhub:test-kubelets"}],
        }
        storage_class = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        }
        for path, body in [
            ("/apis/rbac.authorization.k8s.io/v1/clusterroles", KUBELET_ROLE),
            ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding),
            ("/apis/storage.k8s.io/v1/storageclasses", storage_class),
        ]:
            try:
                api.post(path, body)
            except ApiError as exc:
                if exc.status != 409:
                    raise

    def start_kubelet(self):
        cp = self.control_plane
        cert, key = cp.certs["kubelet"]
        state = self.dir / "kubelet"
        network = f"127.{100 + os.getpid() % 150}"
        count = sum(len(pool_nodes(pool)) for pool in self.pools)  # the kubelet numbers its nodes 1, 2, ...
        serving = cp.ca.issue(
            "kubelet-serving",
            "aifhub-test-kubelet",
            hosts=[f"{network}.{i}.1" for i in range(1, count + 1)],
            server=True,
            client=False,
        )
        config = {
            "server": cp.server,
            "ca": str(cp.ca.cert_path),
            "cert": str(cert),
            "key": str(key),
            "state_dir": str(state),
            "pools": self.pools,
            "pull_seconds": self.pull_seconds,
            "network": network,
            "serving_cert": str(serving[0]),
            "serving_key": str(serving[1]),
        }
        path = self.dir / "kubelet.json"
        path.write_text(json.dumps(config, indent=1))
        log = open(self.dir / "kubelet.log", "ab")
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        self.kubelet = subprocess.Popen(
            [sys.executable, "-m", "localcluster.kubelet", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=_die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + 60
        while not (state / "ready").exists():
            if self.kubelet.poll() is not None:
                raise ClusterError(f"the test kubelet exited:\n{(self.dir / 'kubelet.log').read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise ClusterError("the test kubelet did not register its nodes within 60 s")
            time.sleep(0.2)
        self.nodes = json.loads((state / "ready").read_text())

    def wait_ready(self, timeout=90):
        """Until every node is Ready and the controllers have made the default service account."""
        api = self.admin_api()
        deadline = time.monotonic() + timeout
        while True:
            nodes = api.get("/api/v1/nodes").get("items", [])
            ready = [
                n
                for n in nodes
                if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
            ]
            try:
                api.get("/api/v1/namespaces/default/serviceaccounts/default")
                sa = True
            except ApiError:
                sa = False
            if len(ready) >= len(self.nodes) and sa:
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"cluster not ready in {timeout} s: {len(ready)}/{len(self.nodes)} nodes ready, "
                    f"default service account {'made' if sa else 'missing'}"
                )
            time.sleep(0.3)

    def start(self):
        t = time.monotonic()
        try:
            self.control_plane.start()
            self.bootstrap()
            self.start_kubelet()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        self.timings = dict(
            self.control_plane.timings,
            ready_s=round(time.monotonic() - t - self.control_plane.timings.get("build_s", 0), 1),
        )
        return self

    def stop(self):
        if self.kubelet and self.kubelet.poll() is None:
            self.kubelet.terminate()
            try:
                self.kubelet.wait(15)
            except subprocess.TimeoutExpired:
                self.kubelet.kill()
                self.kubelet.wait()
        self.control_plane.stop()
