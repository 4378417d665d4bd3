"""What the cluster tests share: a client for the cluster under test, namespaces, apply, tokens, waits.

The cluster is the local one (tests/localcluster: the real control plane and the test kubelet) or,
with ``AIFHUB_TEST_KUBECONFIG``, any cluster an operator points the tests at (docs/kubernetes.md).
"""

import base64
import copy
import json
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

REPO = Path(__file__).resolve().parent.parent

FIELD_MANAGER = "aifhub-tests"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}

# What the z2jh chart's templates/hub/rbac.yaml gives the hub's service account (chart 48ea50e): KubeSpawner
# creates and follows pods, volumes, secrets and services, and reads events for the progress page.
CHART_HUB_ROLE_RULES = [
    {
        "apiGroups": [""],
        "resources": ["pods", "persistentvolumeclaims", "secrets", "services"],
        "verbs": ["get", "watch", "list", "create", "delete"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "watch", "list"]},
]


class Kube:
    """A cluster, as its admin (or as the kubeconfig's user)."""

    def __init__(self, kubeconfig, local=None):
        self.kubeconfig = Path(kubeconfig)
        self.local = local  # the LocalCluster, or None for an operator's cluster
        self.api = config.new_client_from_config(str(kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.rbac = client.RbacAuthorizationV1Api(self.api)
        self.dynamic = DynamicClient(self.api)
        self.server = self.api.configuration.host
        ca = self.api.configuration.ssl_ca_cert
        self.ca_data = Path(ca).read_bytes() if ca else None

    def dict(self, obj):
        return self.api.sanitize_for_serialization(obj)

    # -- objects ---------------------------------------------------------------------

    def apply(self, objects, namespace=None, dry_run=False):
        """Server-side apply each object (dicts); returns what the API server answered."""
        answers = []
        for obj in objects:
            resource = self.dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            ns = obj.get("metadata", {}).get("namespace") or namespace if resource.namespaced else None
            answers.append(
                self.dynamic.server_side_apply(
                    resource,
                    body=obj,
                    namespace=ns,
                    field_manager=FIELD_MANAGER,
                    force_conflicts=True,
                    dry_run="All" if dry_run else None,
                ).to_dict()
            )
        return answers

    def apply_files(self, paths, namespace=None, dry_run=False):
        objects = [o for p in paths for o in yaml.safe_load_all(Path(p).read_text()) if o]
        return self.apply(objects, namespace, dry_run)

    def namespace(self, prefix, labels=None, restricted=True):
        """A fresh namespace (Pod Security 'restricted' unless told otherwise), once its default service account exists."""
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        meta = {"name": name, "labels": {**(RESTRICTED if restricted else {}), **(labels or {})}}
        self.core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
        wait(
            lambda: self._exists(self.core.read_namespaced_service_account, "default", name),
            60,
            f"the default service account of {name}",
        )
        return name

    def delete_namespace(self, name):
        try:
            self.core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    @staticmethod
    def _exists(read, *args):
        try:
            read(*args)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def service_account(self, namespace, name, rules=None, cluster_rules=None):
        """A service account, with a Role (and ClusterRole) of ``rules`` bound to it when given."""
        self.apply([{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}])
        if rules is not None:
            self.apply(
                [
                    {
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "Role",
                        "metadata": {"name": name, "namespace": namespace},
                        "rules": rules,
                    },
                    {
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "RoleBinding",
                        "metadata": {"name": name, "namespace": namespace},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
                    },
                ]
            )
        return name

    def token(self, namespace, service_account, seconds=3600):
        """A real service-account token (TokenRequest), as a pod of that account is given."""
        answer = self.core.create_namespaced_service_account_token(
            service_account,
            namespace,
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": seconds}},
        )
        return answer.status.token

    def token_kubeconfig(self, path, namespace, service_account):
        """A kubeconfig that acts as ``service_account`` with a real token (what a pod of it would use)."""
        cluster = {"server": self.server}
        if self.ca_data:
            cluster["certificate-authority-data"] = base64.b64encode(self.ca_data).decode()
        Path(path).write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": service_account,
                    "clusters": [{"name": "cluster", "cluster": cluster}],
                    "users": [{"name": service_account, "user": {"token": self.token(namespace, service_account)}}],
                    "contexts": [
                        {
                            "name": service_account,
                            "context": {"cluster": "cluster", "user": service_account, "namespace": namespace},
                        }
                    ],
                }
            )
        )
        Path(path).chmod(0o600)
        return Path(path)

    # -- pods --------------------------------------------------------------------------

    def pod(self, namespace, name):
        return self.dict(self.core.read_namespaced_pod(name, namespace))

    def wait_pod(self, namespace, name, until, timeout=120, what=None):
        """Wait until ``until(pod dict)`` holds; returns the pod."""
        last = {}

        def check():
            nonlocal last
            try:
                last = self.pod(namespace, name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                last = None
            return until(last)

        wait(
            check,
            timeout,
            what or f"pod {namespace}/{name}",
            lambda: json.dumps((last or {}).get("status"), indent=1)[:3000],
        )
        return last

    def wait_running(self, namespace, name, timeout=120):
        return self.wait_pod(
            namespace,
            name,
            lambda p: (
                p
                and p["status"].get("phase") == "Running"
                and all(c.get("ready") for c in p["status"].get("containerStatuses", []))
            ),
            timeout,
            f"pod {namespace}/{name} running",
        )

    def events(self, namespace, name):
        return [
            e.message
            for e in self.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
        ]


def into_namespace(objects, ns):
    """The objects as if the operator had installed into ``ns``: namespaced ones moved there, bindings too."""
    objects = copy.deepcopy(objects)
    for obj in objects:
        if obj.get("metadata", {}).get("namespace"):
            obj["metadata"]["namespace"] = ns
        for subject in obj.get("subjects", []):
            if subject.get("namespace"):
                subject["namespace"] = ns
    return objects


def wait(check, timeout, what, detail=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s. {detail()}")
        time.sleep(0.25)


def restricted_pod(name, command, image="aifhub/sandbox-cpu-base:2026.12.0", **spec):
    """A pod that meets the 'restricted' Pod Security Standard."""
    container = {
        "name": "main",
        "image": image,
        "command": command,
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "50m", "memory": "64Mi"}},
    }
    container.update(spec.pop("container", {}))
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": spec.pop("labels", {})},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsUser": 1000,
                "runAsGroup": 100,
                "fsGroup": 100,
                "runAsNonRoot": True,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "terminationGracePeriodSeconds": 5,
            "containers": [container],
        },
    }
    body["spec"].update(spec)
    return body


def with_session_now(course, expected, open_to_all=False):
    """A ``prepare_courses`` hook: ``course`` gets a session on now for ``expected`` learners (none when 0),
    and with ``open_to_all`` open enrolment and no roster."""

    def prepare(courses):
        path = courses / course / "course.yaml"
        data = yaml.safe_load(path.read_text())
        if open_to_all:
            data["enrollment"] = "open"
            data.pop("roster", None)
        if expected:
            now = datetime.now(timezone.utc)
            data["sessions"] = [
                {
                    "start": (now - timedelta(minutes=5)).isoformat(timespec="minutes"),
                    "end": (now + timedelta(hours=2)).isoformat(timespec="minutes"),
                    "expected": expected,
                }
            ]
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    return prepare


def deploy_aifhub(kube, prefix, base):
    """What an operator applies before installing the chart (k8s/README.md, step 5), in a fresh namespace: the
    priority classes, the storage claims, the network policies and aifhub's RBAC, and the chart's hub service
    account and Role. Returns the namespace, a kubeconfig with the hub account's real token, and the folder of
    the grading volume (where the hub pod would mount it)."""
    from aifhub.kube import manifests

    ns = kube.namespace(prefix)
    kube.apply(manifests.priority_classes())
    kube.apply(
        manifests.storage(namespace=ns)
        + [
            manifests.grading_network_policy(ns),
            manifests.gradebook_network_policy(ns),
            manifests.placeholder_network_policy(ns),
        ]
        + manifests.grading_rbac(namespace=ns)
        + manifests.placeholder_rbac(namespace=ns),
        ns,
    )
    kube.service_account(ns, "hub", rules=CHART_HUB_ROLE_RULES)
    wait(
        lambda: kube.core.read_namespaced_persistent_volume_claim("aifhub-grading", ns).status.phase == "Bound",
        60,
        "the grading volume's claim bound",
    )
    claim = kube.core.read_namespaced_persistent_volume_claim("aifhub-grading", ns)
    source = kube.core.read_persistent_volume(claim.spec.volume_name).spec
    volume = (source.host_path or source.local).path if (source.host_path or source.local) else None
    return {
        "kube": kube,
        "ns": ns,
        "kubeconfig": kube.token_kubeconfig(Path(base) / "hub-sa.kubeconfig", ns, "hub"),
        "volume": volume,
        "base": Path(base),
    }


def audit_calls(kube, user, since=None):
    """The requests ``user`` made, from the local API server's audit log: dicts of verb, group, resource (with its
    subresource), name, namespace, code, uri and the authorizer's reason (which binding allowed it).

    A server-side apply that created its object (a patch answered 201) is also authorized as a create by the
    API server, so it is listed a second time, as the create it needed (``implied``)."""
    if kube.local is None:
        return None
    calls = []
    for line in kube.local.control_plane.audit_log.read_text().splitlines():
        event = json.loads(line)
        if event.get("user", {}).get("username") != user or event.get("stage") != "ResponseComplete":
            continue
        ref = event.get("objectRef") or {}
        resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        call = {
            "verb": event["verb"],
            "group": ref.get("apiGroup", ""),
            "resource": resource,
            "name": ref.get("name"),
            "namespace": ref.get("namespace"),
            "code": event.get("responseStatus", {}).get("code"),
            "uri": event.get("requestURI"),
            "reason": (event.get("annotations") or {}).get("authorization.k8s.io/reason"),
        }
        calls.append(call)
        if call["verb"] == "patch" and call["code"] == 201:
            calls.append(dict(call, verb="create", implied=True))
    return calls


def _rule_matches(rule, call):
    """One RBAC PolicyRule against one call, as the API server's RBAC authorizer reads it: '*' in apiGroups,
    resources and verbs; a resource with its subresource ("pods/log", or "*/scale" for any resource's);
    resourceNames restrict a rule to calls on the objects named (a create names none when it is authorized; a
    list or watch names one only by a metadata.name field selector)."""
    if not ({"*", call["group"]} & set(rule.get("apiGroups") or [])):
        return False
    if not ({"*", call["verb"]} & set(rule.get("verbs") or [])):
        return False
    resource, _, sub = call["resource"].partition("/")
    if not any(r == "*" or r == call["resource"] or (sub and r == f"*/{sub}") for r in rule.get("resources") or []):
        return False
    names = rule.get("resourceNames") or []
    return not names or (call["verb"] != "create" and call.get("name") in names)


def allowed_by(rules, call):
    """Whether RBAC ``rules`` (PolicyRule dicts) allow ``call`` (an :func:`audit_calls` dict)."""
    return any(_rule_matches(rule, call) for rule in rules)


def granted(rules):
    """The (API group, resource, verb) triples that RBAC ``rules`` spell out (no wildcards expected)."""
    return {
        (g, res, verb)
        for rule in rules
        for g in rule["apiGroups"]
        for res in rule["resources"]
        for verb in rule["verbs"]
    }


def k8s_render(out):
    """``aifhub k8s render`` of the example courses into ``out`` (what an operator hands to helm)."""
    proc = subprocess.run(
        [sys.executable, "-m", "aifhub", "k8s", "render", "--out", str(out), "--courses", str(REPO / "courses")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return out
