"""A local Kubernetes cluster for aifhub's cluster tests and `make cluster`.

A real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler built from
their Go modules at the release pinned in k8s/controlplane/go.mod) and a test kubelet that
simulates GPU nodes and runs their pods for real in bubblewrap. See docs/kubernetes.md.
"""

from .cluster import STORAGE_CLASS, TEST_POOLS, LocalCluster  # noqa: F401
from .controlplane import ClusterError, binaries, build_info  # noqa: F401
