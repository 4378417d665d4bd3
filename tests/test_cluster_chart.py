"""The zero-to-jupyterhub chart itself, rendered by helm with the values `aifhub k8s render` writes: every object
of the chart (hooks included) and aifhub's own manifests go through the real API server with server-side dry run
in a namespace that enforces the 'restricted' Pod Security Standard, and are accepted; so is the Pod each of the
chart's workloads would create (Pod Security enforces on Pods, and only warns on their controllers). JupyterHub
6.1 (aifhub's; the chart ships 5.5) loads and initializes the chart's own jupyterhub_config.py and z2jh.py from
the rendered ConfigMap and Secret, and knows every setting they make.

Helm is built from its Go module (scripts/build-helm, cached beside the control plane). The chart is the one
aifhub is pinned to: ``AIFHUB_Z2JH_CHART`` (an operator's `helm pull --untar`) or ``../shared/z2jh/chart``.
"""

import base64
import json
import time
from pathlib import Path

import pytest
import yaml
from chartkit import (
    WORKLOADS,
    Helm,
    build_info,
    chart_source,
    helm_binary,
    hub_env,
    hub_files,
    pod_of,
    prepared_chart,
    run_hub_config_check,
)
from clusterkit import into_namespace, k8s_render
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parent.parent

# What the chart renders with aifhub's values (chart 48ea50e): its own workloads, each named.
CHART_WORKLOADS = {
    ("Deployment", "hub"),
    ("Deployment", "proxy"),
    ("Deployment", "user-scheduler"),
    ("DaemonSet", "continuous-image-puller"),
    ("DaemonSet", "hook-image-puller"),
    ("Job", "hook-image-awaiter"),
    ("StatefulSet", "user-placeholder"),
}


@pytest.fixture(scope="module")
def chart(tmp_path_factory):
    source = chart_source()
    if source is None:
        pytest.skip(
            "the zero-to-jupyterhub chart is not here: set AIFHUB_Z2JH_CHART to the chart folder "
            "(`helm pull jupyterhub/jupyterhub --version $Z2JH_VERSION --untar`) or put it at ../shared/z2jh/chart"
        )
    return prepared_chart(source, tmp_path_factory.mktemp("chart") / "jupyterhub")


@pytest.fixture(scope="module")
def helm(tmp_path_factory, kube_cluster):
    from conftest import CLUSTER_SUMMARY

    started = time.monotonic()
    binary = helm_binary()
    info = build_info(binary)
    CLUSTER_SUMMARY.append(
        f"helm {info.get('helm')}: a cold build took {info.get('seconds')} s on {info.get('cores')} cores "
        f"(this run: {time.monotonic() - started:.1f} s to build or reuse)"
    )
    return Helm(binary, tmp_path_factory.mktemp("helm-home"), kube_cluster.kubeconfig)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    return k8s_render(tmp_path_factory.mktemp("rendered"))


@pytest.fixture(scope="module")
def ns(kube_cluster):
    name = kube_cluster.namespace("aifhub-chart")
    yield name
    kube_cluster.delete_namespace(name)


@pytest.fixture(scope="module")
def templated(helm, chart, rendered, ns):
    return helm.template(chart, ns, [rendered / "values.yaml"])


def test_helm_is_the_pinned_version(helm):
    pinned = next(
        line.split()[1]
        for line in (REPO / "k8s" / "helm" / "go.mod").read_text().splitlines()
        if line.strip().startswith("helm.sh/helm/v4 ")
    )
    assert helm.version() == pinned


def test_the_chart_renders_aifhubs_hub(templated):
    workloads = {(o["kind"], o["metadata"]["name"]) for o in templated if o["kind"] in WORKLOADS}
    assert workloads == CHART_WORKLOADS, workloads
    [hub] = [o for o in templated if o["kind"] == "Deployment" and o["metadata"]["name"] == "hub"]
    [container] = hub["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "aifhub/hub:0.2.0"
    env = {e["name"]: e for e in container["env"]}
    assert env["AIFHUB_INTERNAL_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "aifhub-secrets",
        "key": "internal-token",
    }
    assert {p["containerPort"] for p in container["ports"]} >= {8081}
    # the chart's own config files, from its ConfigMap, and aifhub's values (hub.config, extraConfig) in its Secret
    [config] = [o for o in templated if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "hub"]
    assert {"jupyterhub_config.py", "z2jh.py"} <= set(config["data"])
    [secret] = [o for o in templated if o["kind"] == "Secret" and o["metadata"]["name"] == "hub"]
    values = yaml.safe_load(base64.b64decode(secret["data"]["values.yaml"]))
    assert values["hub"]["config"]["JupyterHub"]["spawner_class"] == "aifhub-kube"
    assert "configure_z2jh(c)" in values["hub"]["extraConfig"]["10-aifhub"]
    [service] = [o for o in templated if o["kind"] == "Service" and o["metadata"]["name"] == "hub"]
    assert {p["port"] for p in service["spec"]["ports"]} == {8081, 10101}


def manifests(rendered):
    return [
        d
        for path in sorted((rendered / "manifests").glob("*.yaml"))
        if not path.name.startswith("50-")  # an example Job, for reading
        for d in yaml.safe_load_all(path.read_text())
        if d
    ]


@pytest.fixture(scope="module")
def prerequisites(kube_cluster, templated, rendered, ns):
    """What the Pods below need to exist for admission: the service accounts (namespaced, in the throwaway
    namespace) and the priority classes, created for real. The chart's classes that this creates are deleted
    afterwards (helm would refuse to install over objects it does not own); ones that exist already (a release
    named aifhub on an operator's cluster) are used and left alone."""
    kube = kube_cluster
    classes = kube.dynamic.resources.get(api_version="scheduling.k8s.io/v1", kind="PriorityClass")
    existing = {c["metadata"]["name"] for c in classes.get().to_dict()["items"]}
    created = [o for o in templated if o["kind"] == "PriorityClass" and o["metadata"]["name"] not in existing]
    kube.apply([o for o in manifests(rendered) if o["kind"] == "PriorityClass"])
    kube.apply(created + [o for o in templated if o["kind"] == "ServiceAccount"], ns)
    yield
    for cls in created:
        classes.delete(name=cls["metadata"]["name"])


def test_the_charts_objects_and_aifhubs_manifests_are_accepted(kube_cluster, templated, rendered, ns, prerequisites):
    objects = into_namespace([o for o in manifests(rendered) if o["kind"] != "PriorityClass"], ns) + templated
    answers = kube_cluster.apply(objects, ns, dry_run=True)
    assert all(a["metadata"].get("uid") for a in answers)  # the server built each one
    assert {(a["kind"], a["metadata"]["name"]) for a in answers} >= CHART_WORKLOADS
    assert not kube_cluster.apps.list_namespaced_deployment(ns).items  # a dry run


def test_the_pods_of_the_charts_workloads_are_admitted_as_restricted(kube_cluster, templated, ns, prerequisites):
    admitted, refused = set(), {}
    for workload in (o for o in templated if o["kind"] in WORKLOADS):
        try:
            [pod] = kube_cluster.apply([pod_of(workload)], ns, dry_run=True)
            admitted.add((workload["kind"], workload["metadata"]["name"]))
            assert pod["metadata"].get("uid")
        except ApiException as exc:
            refused[workload["metadata"]["name"]] = json.loads(exc.body)["message"]
    assert not refused, json.dumps(refused, indent=1)
    assert admitted == CHART_WORKLOADS


def test_pod_security_refuses_a_chart_pod_that_drops_a_restricted_setting(
    kube_cluster, helm, chart, rendered, ns, prerequisites, tmp_path
):
    """The check above can fail: the hub's pod without runAsNonRoot (a value of the chart) is refused."""
    loose = tmp_path / "loose.yaml"
    loose.write_text(yaml.safe_dump({"hub": {"podSecurityContext": {"runAsNonRoot": False}}}))
    [hub] = [
        o
        for o in helm.template(chart, ns, [rendered / "values.yaml", loose])
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "hub"
    ]
    with pytest.raises(ApiException) as refused:
        kube_cluster.apply([pod_of(hub)], ns, dry_run=True)
    assert refused.value.status == 403
    message = json.loads(refused.value.body)["message"]
    assert 'violates PodSecurity "restricted:latest"' in message and "runAsNonRoot != true" in message, message


def test_the_charts_hub_config_loads_on_jupyterhub_6(helm, chart, rendered, templated, ns, tmp_path):
    """The chart ships JupyterHub 5.5; aifhub's hub image runs 6.1. JupyterHub 6.1 (this environment, the hub
    image's stand-in) loads the chart's own jupyterhub_config.py and z2jh.py from the hub's ConfigMap and Secret
    as the hub pod mounts them, with the pod's environment, and initializes: every setting is one it knows.

    The hub database is SQLite in memory here (`--JupyterHub.db_url`, given on the command line, wins over the
    chart's `hub.db.url`): the values' PostgreSQL is not part of this check."""
    services = [o for o in templated if o["kind"] == "Service"]
    ips = {svc["metadata"]["name"]: f"10.96.0.{i}" for i, svc in enumerate(services, start=10)}
    env = hub_env(templated, ns, "127.0.0.1", {("aifhub-secrets", "internal-token"): "t" * 64}, ips)
    answer, output = run_hub_config_check(
        hub_files(templated, tmp_path / "etc"), env, ["--JupyterHub.db_url=sqlite://"]
    )
    assert answer["jupyterhub"].startswith("6.1."), answer
    assert answer["unknown"] == {}, answer  # no setting of the chart's config is unknown to JupyterHub 6.1
    assert not [w for w in answer["warnings"] if "not recognized" in w or "deprecated" in w.lower()], answer
    assert answer["spawner_class"] == "KubeSandboxSpawner"
    assert {"aifhub", "jupyterhub-idle-culler"} <= set(answer["services"]), answer
    # the chart finds the proxy's API and the hub by their Services' names and the ports Kubernetes exports
    proxy_api = next(s for s in services if s["metadata"]["name"] == "proxy-api")
    assert answer["proxy_api_url"] == f"http://proxy-api:{proxy_api['spec']['ports'][0]['port']}"
    assert answer["hub_connect_url"] == "http://hub:8081/hub/"
    assert "Loading extra config: 10-aifhub" in output

    # the check can fail: a setting JupyterHub does not have (a misspelt hub.config trait) is named
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({"hub": {"config": {"JupyterHub": {"concurrent_spawn_limt": 3}}}}))
    misspelt = helm.template(chart, ns, [rendered / "values.yaml", typo])
    answer, _ = run_hub_config_check(hub_files(misspelt, tmp_path / "etc2"), env, ["--JupyterHub.db_url=sqlite://"])
    assert answer["unknown"] == {"JupyterHub": ["concurrent_spawn_limt"]}, answer
