"""The RBAC the chart and `aifhub k8s render` give the hub's service account is exactly enough.

The hub (KubeSpawner) and the aifhub service (grading Jobs, placeholders for a scheduled session) run as in the
hub pod, with the hub account's real token. Every request they make, as the API server's own audit log records
it, was allowed, and each is one of the calls aifhub is known to make; aifhub's own Roles grant nothing those
calls do not use; a call outside them is forbidden.
"""

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from clusterkit import CHART_HUB_ROLE_RULES, Kube, allowed_by, audit_calls, deploy_aifhub, granted, restricted_pod, wait
from gradingkit import ASSIGNMENT, COURSE, solution_notebook, submit
from kubehub import Z2jhHub
from kubernetes.client.exceptions import ApiException

from aifhub.kube import manifests
from aifhub.kube.client import JOB_LABEL, delete_jobs
from aifhub.kube.placeholders import replicaset_name

pytestmark = pytest.mark.cluster

# (API group, resource, verb) of every call aifhub's hub and service make with the hub's account.
AIFHUB_CALLS = {
    # KubeSpawner: a pod and a claim per sandbox, the pods and events of the namespace followed for the progress page
    ("", "pods", "create"),
    ("", "pods", "list"),
    ("", "pods", "watch"),
    ("", "pods", "delete"),
    ("", "persistentvolumeclaims", "create"),
    ("", "events", "list"),
    ("", "events", "watch"),
    # the service: one grading Job per notebook, followed to its end, its pod's status read, then deleted
    ("batch", "jobs", "create"),
    ("batch", "jobs/status", "get"),
    ("batch", "jobs", "delete"),
    ("batch", "jobs", "list"),
    # the service: placeholders for scheduled sessions, kept by server-side apply (a patch, authorized as a create
    # too when it makes the ReplicaSet), listed at each check, deleted when the session's window closes
    ("apps", "replicasets", "list"),
    ("apps", "replicasets", "create"),
    ("apps", "replicasets", "patch"),
    ("apps", "replicasets", "delete"),
}
WARM_COURSE = "gpu-fundamentals"  # the course given a session now: its placeholders are made, then removed


def _course_file(courses):
    return courses / WARM_COURSE / "course.yaml"


def with_session_now(courses):
    path = _course_file(courses)
    data = yaml.safe_load(path.read_text())
    now = datetime.now(timezone.utc)
    data["sessions"] = [
        {
            "start": (now - timedelta(minutes=5)).isoformat(timespec="minutes"),
            "end": (now + timedelta(hours=2)).isoformat(timespec="minutes"),
            "expected": 1,
        }
    ]
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def without_sessions(courses):
    """What an instructor does when a session is called off: the schedule goes, and with it the placeholders."""
    path = _course_file(courses)
    data = yaml.safe_load(path.read_text())
    data.pop("sessions", None)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(scope="module")
def deployment(kube_cluster, tmp_path_factory):
    deployment = deploy_aifhub(kube_cluster, "aifhub-rbac", tmp_path_factory.mktemp("cluster-rbac"))
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
        prepare_courses=with_session_now,
        service_args=[
            f"--GradingManager.kube_config={kubeconfig}",
            f"--GradingManager.kube_namespace={ns}",
            "--GradingManager.workers=1",
            "--GradingManager.kube_start_timeout=60",
            "--Placeholders.interval=1",
        ],
    ).start()
    hub.record_allocation()
    yield hub
    hub.stop()


def test_every_call_of_the_hub_and_the_service_is_allowed_and_nothing_more_is_granted(hub, deployment):
    kube, ns = deployment["kube"], deployment["ns"]

    # what the service does for a scheduled session: the course's placeholders made (server-side apply)...
    def replicaset():
        try:
            return kube.apps.read_namespaced_replica_set(replicaset_name(WARM_COURSE), ns)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    wait(replicaset, 60, f"the placeholders of {WARM_COURSE} made")
    # what the hub does: a learner's sandbox, started and stopped
    hub.spawn_from_form("learner5", "dl-basics")
    hub.wait_ready("learner5")
    hub.stop_server("learner5")
    # what the service does: a submission graded in a Job
    assert hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/release").status_code == 200
    hub.service("POST", f"courses/{COURSE}/enrol", token=hub.token_for("learner5"))
    assert submit(hub, "learner5", solution_notebook()).status_code == 201
    assert hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/collect").status_code == 200
    r = hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/autograde")
    assert r.status_code == 202, r.text

    def graded():
        jobs = hub.service("GET", f"courses/{COURSE}/jobs").json()["jobs"]
        return jobs and all(j["state"] in ("done", "failed") for j in jobs) and jobs

    wait(graded, 180, "the submission graded")
    [job] = hub.service("GET", f"courses/{COURSE}/jobs").json()["jobs"]
    assert job["state"] == "done" and job["score"] == job["max_score"], job
    # what the service does when it stopped a grading job, or finds Jobs a crashed run left: delete them by label
    left = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "left-behind", "labels": {JOB_LABEL: "999"}},
        "spec": {"template": {"spec": restricted_pod("x", ["python", "-c", "import time; time.sleep(300)"])["spec"]}},
    }
    kube.batch.create_namespaced_job(ns, left)
    assert asyncio.run(delete_jobs(ns, str(deployment["kubeconfig"]), 999)) == 1
    # ...and removed when the session is called off
    without_sessions(hub.courses)
    wait(lambda: replicaset() is None, 60, f"the placeholders of {WARM_COURSE} removed")

    calls = audit_calls(kube, f"system:serviceaccount:{ns}:hub")
    if calls is None:
        pytest.skip("the audit log is the local cluster's; on another cluster see the access reviews below")
    made = {(c["group"], c["resource"], c["verb"]) for c in calls}
    refused = [c for c in calls if c["code"] == 403]
    assert not refused, json.dumps(refused, indent=1)
    assert made <= AIFHUB_CALLS, sorted(made - AIFHUB_CALLS)
    assert all(c["namespace"] == ns for c in calls), {c["namespace"] for c in calls}
    # the Roles the hub's account has: the chart's, and aifhub's own (what deploy_aifhub applied from the manifests)
    aifhub_rules = [
        rule
        for objects in (manifests.grading_rbac(namespace=ns), manifests.placeholder_rbac(namespace=ns))
        for obj in objects
        if obj["kind"] == "Role"
        for rule in obj["rules"]
    ]
    uncovered = [c for c in calls if not allowed_by(CHART_HUB_ROLE_RULES + aifhub_rules, c)]
    assert not uncovered, json.dumps(uncovered, indent=1)
    # aifhub's own Roles: each grant is used by a call the chart's Role does not already allow
    ours = granted(aifhub_rules)
    needed = {(c["group"], c["resource"], c["verb"]) for c in calls if not allowed_by(CHART_HUB_ROLE_RULES, c)}
    assert ours == needed, {"granted but unused": sorted(ours - needed), "used but not granted": sorted(needed - ours)}


@pytest.mark.parametrize(
    "call",
    [
        ("list", "secrets", "kube-system"),
        ("create", "jobs", "default"),
        ("list", "nodes", None),
        ("create", "rolebindings", "SAME"),
        ("create", "deployments", "SAME"),
    ],
)
def test_a_call_outside_is_forbidden(deployment, call):
    verb, resource, namespace = call
    namespace = deployment["ns"] if namespace == "SAME" else namespace
    hub_account = Kube(deployment["kubeconfig"])
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {
            "resourceAttributes": {
                "verb": verb,
                "resource": resource,
                "namespace": namespace or "",
                "group": {"jobs": "batch", "rolebindings": "rbac.authorization.k8s.io", "deployments": "apps"}.get(
                    resource, ""
                ),
            }
        },
    }
    from kubernetes import client

    answer = client.AuthorizationV1Api(hub_account.api).create_self_subject_access_review(review)
    assert answer.status.allowed is False
    if (verb, resource) == ("list", "secrets"):
        with pytest.raises(ApiException) as refused:
            hub_account.core.list_namespaced_secret(namespace)
        assert refused.value.status == 403


def test_the_calls_aifhub_makes_are_allowed_by_access_review(deployment):
    """The same list, asked of the cluster's authorizer: what an operator's cluster is checked with."""
    from kubernetes import client

    hub_account = Kube(deployment["kubeconfig"])
    denied = []
    for group, resource, verb in sorted(AIFHUB_CALLS):
        name, _, sub = resource.partition("/")
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "verb": verb,
                    "group": group,
                    "resource": name,
                    "subresource": sub,
                    "namespace": deployment["ns"],
                }
            },
        }
        if not client.AuthorizationV1Api(hub_account.api).create_self_subject_access_review(review).status.allowed:
            denied.append((group, resource, verb))
    assert not denied


def test_the_rules_are_read_as_the_rbac_authorizer_reads_them():
    """allowed_by, on the cases the audit log can hold: wildcards, subresources, resource names, the core group."""

    def call(verb, resource, group="", name=None):
        return {"verb": verb, "group": group, "resource": resource, "name": name}

    pods = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    assert allowed_by(pods, call("get", "pods"))
    assert not allowed_by(pods, call("get", "pods/log"))  # a subresource is granted by name
    assert not allowed_by(pods, call("get", "pods", group="apps"))  # the core group is ""
    assert not allowed_by(pods, call("delete", "pods"))
    assert allowed_by([{"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}], call("get", "pods/log"))
    assert allowed_by(
        [{"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["patch"]}],
        call("patch", "replicasets/scale", "apps"),
    )
    assert not allowed_by(
        [{"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["patch"]}], call("patch", "replicasets", "apps")
    )
    everything = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
    assert allowed_by(everything, call("create", "jobs/status", "batch"))
    named = [
        {"apiGroups": ["apps"], "resources": ["replicasets"], "resourceNames": ["a"], "verbs": ["patch", "create"]}
    ]
    assert allowed_by(named, call("patch", "replicasets", "apps", "a"))
    assert not allowed_by(named, call("patch", "replicasets", "apps", "b"))
    assert not allowed_by(named, call("create", "replicasets", "apps", "a"))  # a create is authorized before its name
