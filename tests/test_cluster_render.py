"""`aifhub k8s render`, applied: the extra manifests, and the pods and claims KubeSpawner builds from the rendered
values (merged as the chart merges them), go through the real API server with server-side dry-run in a
namespace that enforces the 'restricted' Pod Security Standard, and are accepted. A pod that drops one of
the restricted settings is refused, naming it.

The chart's own templates, rendered by helm with these values, are checked in test_cluster_chart.py; the
values are checked against the chart's schema in test_k8s_render.py.
"""

import copy
import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from aifhub.catalog import load_catalog, load_images
from clusterkit import into_namespace, k8s_render

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parent.parent
COURSES = sorted(load_catalog([REPO / "courses"], load_images(REPO / "sandbox_images")).courses)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    return k8s_render(tmp_path_factory.mktemp("rendered"))


@pytest.fixture(scope="module")
def ns(kube_cluster):
    name = kube_cluster.namespace("aifhub-render")
    yield name
    kube_cluster.delete_namespace(name)


def built_pods(rendered, course, user="learner1"):
    """The pod (and claim) KubeSpawner builds for ``user`` in ``course`` from the rendered values."""
    return copy.deepcopy(_built(str(rendered), course, user))


@functools.lru_cache
def _built(rendered, course, user):
    rendered = Path(rendered)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aifhub",
            "k8s",
            "pods",
            "--course",
            course,
            "--user",
            user,
            "--values",
            str(rendered / "values.yaml"),
            "--pvc",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_rendered_manifests_are_accepted(kube_cluster, rendered, ns):
    kube = kube_cluster
    docs = [
        d for path in sorted((rendered / "manifests").glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d
    ]
    classes = [d for d in docs if d["kind"] == "PriorityClass"]
    kube.apply(classes)  # for real: the pods below name them, and a dry run would not create them
    answers = kube.apply(into_namespace([d for d in docs if d["kind"] != "PriorityClass"], ns), ns, dry_run=True)
    kinds = sorted({a["kind"] for a in answers})
    assert kinds == ["ConfigMap", "Job", "NetworkPolicy", "PersistentVolumeClaim", "Role", "RoleBinding"], kinds
    assert all(a["metadata"].get("uid") for a in answers)  # the server built each one
    assert not kube.core.list_namespaced_config_map(
        ns, label_selector="app.kubernetes.io/part-of=aifhub"
    ).items  # dry run


@pytest.mark.parametrize("course", COURSES)
def test_the_pods_kubespawner_builds_from_the_values_are_admitted(kube_cluster, rendered, ns, course):
    objects = into_namespace(built_pods(rendered, course), ns)
    for obj in objects:
        obj["metadata"]["namespace"] = ns
    answers = kube_cluster.apply(objects, ns, dry_run=True)
    pod = next(a for a in answers if a["kind"] == "Pod")
    assert pod["spec"]["priorityClassName"].startswith("aifhub-sandbox-") and pod["spec"]["priority"] == 10
    assert pod["spec"]["schedulerName"] == "aifhub-user-scheduler"


RESTRICTED_DROPS = {
    "allowPrivilegeEscalation": (
        lambda p: p["spec"]["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
        "allowPrivilegeEscalation != false",
    ),
    "capabilities": (
        lambda p: p["spec"]["containers"][0]["securityContext"].pop("capabilities"),
        "unrestricted capabilities",
    ),
    "runAsNonRoot": (
        lambda p: [
            sc.pop("runAsNonRoot")
            for sc in (p["spec"]["securityContext"], p["spec"]["containers"][0]["securityContext"])
        ],
        "runAsNonRoot != true",
    ),
    "seccompProfile": (
        lambda p: [
            sc.pop("seccompProfile")
            for sc in (p["spec"]["securityContext"], p["spec"]["containers"][0]["securityContext"])
        ],
        "seccompProfile",
    ),
    "hostPath": (
        lambda p: p["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
        "restricted volume types",
    ),
}


@pytest.mark.parametrize("setting", sorted(RESTRICTED_DROPS))
def test_pod_security_refuses_a_sandbox_without_one_restricted_setting(kube_cluster, rendered, ns, setting):
    [pod] = [o for o in into_namespace(built_pods(rendered, "dl-basics"), ns) if o["kind"] == "Pod"]
    pod["metadata"]["namespace"] = ns
    drop, named = RESTRICTED_DROPS[setting]
    drop(pod)
    with pytest.raises(ApiException) as refused:
        kube_cluster.apply([pod], ns, dry_run=True)
    assert refused.value.status == 403
    message = json.loads(refused.value.body)["message"]
    assert 'violates PodSecurity "restricted:latest"' in message and named in message, message
