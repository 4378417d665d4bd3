"""Kubernetes objects aifhub needs beside the z2jh chart."""

import json

from ..deploy import NAMESPACE
from ..deploy.dashboard import grafana_dashboard
from .grading_job import GRADER, GRADING_PVC
from .placeholders import PLACEHOLDER, PRIORITY as PLACEHOLDER_PRIORITY, PRIORITY_CLASS as PLACEHOLDER_PRIORITY_CLASS
from .podspec import GRADEBOOK_LABEL
from .sharing import device_plugin_data

# Sandboxes share one priority value: they preempt the chart's user placeholders (-10)
# but never each other. Two classes let a ResourceQuota scope GPU sandboxes separately.
PRIORITY_CLASSES = [
    ("aifhub-sandbox-gpu", 10, "PreemptLowerPriority", "aifhub learner sandboxes on GPU pools"),
    ("aifhub-sandbox-cpu", 10, "PreemptLowerPriority", "aifhub learner sandboxes without GPU"),
    ("aifhub-grading", 5, "Never", "aifhub grading Jobs: wait for room, never evict anyone"),
    (
        PLACEHOLDER_PRIORITY_CLASS,
        PLACEHOLDER_PRIORITY,
        "Never",
        "aifhub placeholders for scheduled course sessions: any sandbox evicts them",
    ),
]

MIG_PARTED_CONFIG = """\
version: v1
mig-configs:
  all-disabled:
    - devices: all
      mig-enabled: false
  all-1g.10gb:        # H100/H200 80GB: seven learners per GPU (aifhub kind mig-1g.10gb)
    - devices: all
      mig-enabled: true
      mig-devices:
        "1g.10gb": 7
  all-balanced:       # mixed sizes: two small, one medium and one large slice per GPU
    - devices: all
      mig-enabled: true
      mig-devices:
        "1g.10gb": 2
        "2g.20gb": 1
        "3g.40gb": 1
"""

DEVICE_PLUGIN_CONFIG = """\
version: v1
flags:
  migStrategy: mixed   # MIG slices appear as nvidia.com/mig-<profile> resources, as aifhub's MIG pools request
"""


def _meta(name, namespace=NAMESPACE, **labels):
    meta = {"name": name, "labels": {"app.kubernetes.io/part-of": "aifhub", **labels}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def priority_classes():
    return [
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": _meta(name, namespace=None),
            "value": value,
            "globalDefault": False,
            "preemptionPolicy": policy,
            "description": text,
        }
        for name, value, policy, text in PRIORITY_CLASSES
    ]


def storage(namespace=NAMESPACE, state_size="10Gi", grading_size="20Gi"):
    """The service's state volume (hub pod, one writer) and the grading volume (ReadWriteMany): the courses'
    nbgrader directories, which instructors' sandboxes mount, and a folder per graded notebook, which that
    notebook's grading pod mounts."""
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": _meta("aifhub-state", namespace),
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": state_size}}},
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": _meta(GRADING_PVC, namespace),
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": grading_size}}},
        },
    ]


def grading_network_policy(namespace=NAMESPACE):
    """Grading pods talk to nobody: no ingress, no egress (not even DNS)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta("aifhub-grading-no-network", namespace),
        "spec": {
            "podSelector": {"matchLabels": {"aifhub.io/component": GRADER}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [],
        },
    }


def placeholder_network_policy(namespace=NAMESPACE):
    """Placeholder pods only hold room on their nodes: no ingress, no egress."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta("aifhub-placeholders-no-network", namespace),
        "spec": {
            "podSelector": {"matchLabels": {"aifhub.io/component": PLACEHOLDER}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [],
        },
    }


def gradebook_network_policy(namespace=NAMESPACE, port=5432):
    """Instructors' sandboxes (labelled by the spawner) may reach PostgreSQL, where their course's gradebook is:
    formgrader connects as the course's own role. Added to the chart's sandbox policy, which allows no private IPs."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta("aifhub-instructors-gradebook", namespace),
        "spec": {
            "podSelector": {"matchLabels": {GRADEBOOK_LABEL: "true"}},
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"port": port, "protocol": "TCP"}]}],
        },
    }


def grading_rbac(namespace=NAMESPACE, hub_service_account="hub"):
    """Lets the hub pod (where the aifhub service runs) create, follow and delete grading Jobs: exactly the calls
    the service makes (tests/test_cluster_rbac.py). Reading the Jobs' pods is already the chart's hub Role's."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta("aifhub-grading", namespace),
            "rules": [
                {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "list", "delete"]},
                {"apiGroups": ["batch"], "resources": ["jobs/status"], "verbs": ["get"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta("aifhub-grading", namespace),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "aifhub-grading"},
            "subjects": [{"kind": "ServiceAccount", "name": hub_service_account, "namespace": namespace}],
        },
    ]


def placeholder_rbac(namespace=NAMESPACE, hub_service_account="hub"):
    """Lets the aifhub service (in the hub pod) keep the courses' placeholder ReplicaSets: apply them (server-side
    apply: create the first time, patch after), list its own, delete them after a session. Their pods are read
    with the chart's hub Role."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta("aifhub-placeholders", namespace),
            "rules": [
                {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["list", "create", "patch", "delete"]}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta("aifhub-placeholders", namespace),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "aifhub-placeholders"},
            "subjects": [{"kind": "ServiceAccount", "name": hub_service_account, "namespace": namespace}],
        },
    ]


def nvidia_configs(operator_namespace="gpu-operator", kinds=None):
    """Configs for the NVIDIA GPU operator: the MIG layouts and the device plugin's configurations (the mixed
    strategy by default; one per time-slice or MPS GPU kind, which a node pool takes with the label
    ``nvidia.com/device-plugin.config``: see :mod:`aifhub.kube.sharing`)."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta("aifhub-mig-parted-config", operator_namespace),
            "data": {"config.yaml": MIG_PARTED_CONFIG},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta("aifhub-device-plugin-config", operator_namespace),
            "data": device_plugin_data(kinds) if kinds else {"default": DEVICE_PLUGIN_CONFIG},
        },
    ]


def dashboard_configmap(namespace=NAMESPACE):
    """A Grafana dashboard, picked up by the Grafana sidecar through the grafana_dashboard label."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta("aifhub-grafana-dashboard", namespace, grafana_dashboard="1"),
        "data": {"aifhub.json": json.dumps(grafana_dashboard(), indent=2, sort_keys=True)},
    }
