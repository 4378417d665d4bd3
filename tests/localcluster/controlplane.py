"""A Kubernetes control plane on this machine: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler, built from their Go modules (scripts/build-control-plane) and run as processes.

Real TLS everywhere (one CA; etcd and the API server check client certificates), service-account
tokens signed by the API server, RBAC and Node authorization, Pod Security admission, the
controllers for Jobs, ReplicaSets, StatefulSets, namespaces, service-account tokens, volumes,
quotas and garbage collection, and the default scheduler with preemption. No kubelet: see
:mod:`localcluster.kubelet` for the test kubelet that runs the pods.
"""

import base64
import ctypes
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from . import pki

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-control-plane"
SERVICE_CIDR = "10.96.0.0/16"
ISSUER = "https://kubernetes.default.svc.cluster.local"

# What the controller-manager runs: what aifhub's objects need, nothing for clouds or nodes' IPAM.
CONTROLLERS = [
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "replicaset-controller",
    "deployment-controller",
    "statefulset-controller",
    "daemonset-controller",
    "disruption-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "garbage-collector-controller",
    "resourcequota-controller",
    "persistentvolume-binder-controller",
    "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "pod-garbage-collector-controller",
]


# The z2jh chart's user scheduler (chart 48ea50e, templates/scheduling/user-scheduler/configmap.yaml with the
# chart's default scheduling.userScheduler values): kube-scheduler with a profile that packs user pods onto the
# busiest nodes. Here it is a second profile of the one scheduler, named as the chart names it for release aifhub.
USER_SCHEDULER = "aifhub-user-scheduler"
USER_SCHEDULER_PROFILE = {
    "schedulerName": USER_SCHEDULER,
    "plugins": {
        "score": {
            "disabled": [
                {"name": n}
                for n in (
                    "NodeResourcesBalancedAllocation",
                    "NodeAffinity",
                    "InterPodAffinity",
                    "NodeResourcesFit",
                    "ImageLocality",
                )
            ],
            "enabled": [
                {"name": "NodeAffinity", "weight": 14631},
                {"name": "InterPodAffinity", "weight": 1331},
                {"name": "NodeResourcesFit", "weight": 121},
                {"name": "ImageLocality", "weight": 11},
            ],
        }
    },
    "pluginConfig": [
        {
            "name": "NodeResourcesFit",
            "args": {
                "scoringStrategy": {
                    "type": "MostAllocated",
                    "resources": [{"name": "cpu", "weight": 1}, {"name": "memory", "weight": 1}],
                }
            },
        }
    ],
}


# The API server's audit log records every request of a service account outside kube-system (the controllers'
# own accounts are left out): the cluster tests read it to see each call aifhub makes and what RBAC answered.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}


class ClusterError(RuntimeError):
    """The control plane could not be built or started; the message says which part and why."""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binaries():
    """The folder of the built binaries: $AIFHUB_CLUSTER_BIN, else built (or reused) by scripts/build-control-plane."""
    if os.environ.get("AIFHUB_CLUSTER_BIN"):
        return Path(os.environ["AIFHUB_CLUSTER_BIN"])
    proc = subprocess.run([str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"{BUILD_SCRIPT.name} failed (exit {proc.returncode}); its output is above")
    return Path(proc.stdout.strip().splitlines()[-1])


def build_info(bin_dir):
    path = Path(bin_dir).parent / "build.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _die_with_parent():
    """In the child: get SIGTERM when the process that started the cluster goes (a crashed test run)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def write_kubeconfig(path, server, ca, cert=None, key=None, token=None, namespace=None, name="aifhub-test"):
    user = {}
    if cert:
        user["client-certificate-data"] = base64.b64encode(Path(cert).read_bytes()).decode()
        user["client-key-data"] = base64.b64encode(Path(key).read_bytes()).decode()
    if token:
        user["token"] = token
    context = {"cluster": name, "user": name}
    if namespace:
        context["namespace"] = namespace
    Path(path).write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": name,
                "clusters": [
                    {
                        "name": name,
                        "cluster": {
                            "server": server,
                            "certificate-authority-data": base64.b64encode(Path(ca).read_bytes()).decode(),
                        },
                    }
                ],
                "users": [{"name": name, "user": user}],
                "contexts": [{"name": name, "context": context}],
            },
            indent=1,
        )
    )
    Path(path).chmod(0o600)
    return Path(path)


class ControlPlane:
    """Start with :meth:`start`, stop with :meth:`stop`; ``kubeconfig`` is the cluster admin's."""

    def __init__(self, state_dir, bin_dir=None):
        self.dir = Path(state_dir)
        self.bin = Path(bin_dir) if bin_dir else None
        self.pki = self.dir / "pki"
        self.logs = self.dir / "logs"
        self.procs = {}
        self.etcd_port, self.etcd_peer_port = free_port(), free_port()
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = self.dir / "admin.kubeconfig"
        self.audit_log = self.dir / "logs" / "audit.log"
        self.timings = {}

    # -- set-up ------------------------------------------------------------------

    def _certificates(self):
        ca = self.ca = pki.CertificateAuthority(self.pki)
        hosts = [
            "127.0.0.1",
            "localhost",
            "10.96.0.1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        self.certs = {
            "etcd": ca.issue("etcd", "etcd", hosts=["127.0.0.1", "localhost"], server=True),
            "apiserver-etcd": ca.issue("apiserver-etcd-client", "kube-apiserver-etcd-client"),
            "apiserver": ca.issue("apiserver", "kube-apiserver", hosts=hosts, server=True, client=False),
            "admin": ca.issue("admin", "aifhub-test-admin", organizations=["system:masters"]),
            "scheduler": ca.issue("scheduler", "system:kube-scheduler"),
            "controller-manager": ca.issue("controller-manager", "system:kube-controller-manager"),
            "kubelet": ca.issue("kubelet", "aifhub-test-kubelet", organizations=["aifhub:test-kubelets"]),
            # how the API server proves itself to the test kubelet's API (pod logs), as kubeadm's
            "apiserver-kubelet-client": ca.issue(
                "apiserver-kubelet-client", "kube-apiserver-kubelet-client", organizations=["system:masters"]
            ),
        }
        self.sa_key, self.sa_pub = pki.service_account_keys(self.pki)
        for name in ("admin", "scheduler", "controller-manager", "kubelet"):
            cert, key = self.certs[name]
            write_kubeconfig(self.dir / f"{name}.kubeconfig", self.server, ca.cert_path, cert, key)

    def _spawn(self, name, args):
        log = open(self.logs / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            [str(self.bin / name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            cwd=self.dir,
        )
        log.close()

    def _check_alive(self, name):
        proc = self.procs[name]
        if proc.poll() is not None:
            tail = (self.logs / f"{name}.log").read_text(errors="replace")[-4000:]
            raise ClusterError(f"{name} exited with status {proc.returncode}:\n{tail}")

    def _get(self, url, cert_name="admin", timeout=5):
        ctx = ssl.create_default_context(cafile=str(self.ca.cert_path))
        cert, key = self.certs[cert_name]
        ctx.load_cert_chain(str(cert), str(key))
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as r:
            return r.status, r.read().decode()

    def _wait(self, name, check, timeout):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self._check_alive(name)
            try:
                if check():
                    return
            except Exception as exc:  # not up yet
                last = exc
            time.sleep(0.2)
        tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
        raise ClusterError(f"{name} not ready within {timeout} s ({last!r}):\n{tail}")

    # -- the components -------------------------------------------------------------

    def _start_etcd(self):
        cert, key = self.certs["etcd"]
        url = f"https://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        self._spawn(
            "etcd",
            [
                "--name=aifhub-test",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls={url}",
                f"--advertise-client-urls={url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=aifhub-test={peer}",
                f"--cert-file={cert}",
                f"--key-file={key}",
                "--client-cert-auth",
                f"--trusted-ca-file={self.ca.cert_path}",
                "--listen-metrics-urls=",
                "--log-level=warn",
                # a test cluster: its data dies with it; fsync on a shared disk would slow every write
                "--unsafe-no-fsync",
                "--quota-backend-bytes=2147483648",
            ],
        )

    def _start_apiserver(self):
        cert, key = self.certs["apiserver"]
        etcd_cert, etcd_key = self.certs["apiserver-etcd"]
        policy = self.dir / "audit-policy.yaml"
        policy.write_text(json.dumps(AUDIT_POLICY))
        self._spawn(
            "kube-apiserver",
            [
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-maxsize=200",
                f"--etcd-servers=https://127.0.0.1:{self.etcd_port}",
                f"--etcd-cafile={self.ca.cert_path}",
                f"--etcd-certfile={etcd_cert}",
                f"--etcd-keyfile={etcd_key}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.port}",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",  # the kubernetes Service's endpoint would be a loopback address
                f"--tls-cert-file={cert}",
                f"--tls-private-key-file={key}",
                f"--client-ca-file={self.ca.cert_path}",
                # `kubectl logs`: the API server asks the node's kubelet API, at the node's InternalIP (the test
                # kubelet serves it with a certificate of the cluster's CA, for the API server's client certificate)
                f"--kubelet-client-certificate={self.certs['apiserver-kubelet-client'][0]}",
                f"--kubelet-client-key={self.certs['apiserver-kubelet-client'][1]}",
                f"--kubelet-certificate-authority={self.ca.cert_path}",
                "--kubelet-preferred-address-types=InternalIP",
                f"--service-account-issuer={ISSUER}",
                f"--service-account-key-file={self.sa_pub}",
                f"--service-account-signing-key-file={self.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--anonymous-auth=false",
                "--enable-admission-plugins=NodeRestriction,PodSecurity,Priority,ResourceQuota,LimitRanger,ServiceAccount",
                "--allow-privileged=false",
                "--profiling=false",
                f"--cert-dir={self.pki}",
                # what kubeadm sets for front proxies; without it every component logs a missing CA bundle
                f"--requestheader-client-ca-file={self.ca.cert_path}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                "--v=1",
            ],
        )
        self._wait("kube-apiserver", lambda: self._get(f"{self.server}/readyz")[0] == 200, 120)

    def _start_controller_manager(self):
        kubeconfig = self.dir / "controller-manager.kubeconfig"
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self.sa_key}",
                f"--root-ca-file={self.ca.cert_path}",
                f"--controllers={','.join(CONTROLLERS)}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.pki / 'kcm'}",
                "--concurrent-job-syncs=20",
                "--kube-api-qps=100",
                "--kube-api-burst=200",
                "--v=1",
            ],
        )

    def _start_scheduler(self):
        kubeconfig = self.dir / "scheduler.kubeconfig"
        self.scheduler_port = free_port()
        config = self.dir / "scheduler.yaml"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubescheduler.config.k8s.io/v1",
                    "kind": "KubeSchedulerConfiguration",
                    "clientConnection": {"kubeconfig": str(kubeconfig), "qps": 100, "burst": 200},
                    "leaderElection": {"leaderElect": False},
                    "profiles": [{"schedulerName": "default-scheduler"}, USER_SCHEDULER_PROFILE],
                },
                indent=1,
            )
        )
        self._spawn(
            "kube-scheduler",
            [
                f"--config={config}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.scheduler_port}",
                f"--cert-dir={self.pki / 'scheduler'}",
                f"--v={os.environ.get('AIFHUB_SCHEDULER_V', '1')}",
            ],
        )

    def start(self):
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        if self.bin is None:
            self.bin = binaries()
        self.timings["build_s"] = round(time.monotonic() - started, 1)
        t = time.monotonic()
        self._certificates()
        try:
            self._start_etcd()
            self._start_apiserver()
            self._start_controller_manager()
            self._start_scheduler()
            for name in ("kube-controller-manager", "kube-scheduler"):
                self._check_alive(name)
        except BaseException:
            self.stop()
            raise
        self.timings["start_s"] = round(time.monotonic() - t, 1)
        return self

    def stop(self):
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def alive(self):
        return {name: proc.poll() is None for name, proc in self.procs.items()}


def main_binaries():
    """``python -m localcluster.controlplane``: build or reuse the binaries, print their folder."""
    print(binaries())


if __name__ == "__main__":
    sys.exit(main_binaries())
