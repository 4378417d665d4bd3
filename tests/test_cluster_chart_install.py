"""`helm upgrade --install` of the zero-to-jupyterhub chart with aifhub's values on the cluster, as k8s/README.md
(steps 5 and 6) has the operator do it, then `helm upgrade` with a changed value and `helm uninstall`.

What this shows: helm installs the release into a namespace that enforces Pod Security 'restricted'; the
controllers create the chart's pods and the API server admits them (for real, not a dry run); an upgrade
changes the value and keeps the secrets the chart generated (the proxy's token, the hub's cookie secret);
uninstall removes the chart's objects and leaves aifhub's volumes of state, which the operator applied.

The chart's pods run in the test kubelet (stand-ins for the chart's images, tmpfs mount points, Services on
loopback: tests/localcluster/images.py, podfs.py, servicenet.py): the hub's login page and the aifhub service
answer through the proxy-public Service, the user scheduler, image puller and placeholder run; a learner logs in
through proxy-public, spawns a GPU course from the chart's hub and runs a cell; the upgrade (a GPU pool added)
replaces the hub and keeps the learner's server and the ledger; uninstall keeps the learner's course volume, and installed again the service finds its ledger. The
test's site values (SITE) say why each differs from a site's.

Not shown here yet: PostgreSQL (SQLite here), the idle culler (not in the test environment).
"""

import base64
import json

import secrets
import time

import pytest
import requests
import yaml
from chartkit import Helm, chart_source, helm_binary, prepared_chart
from clusterkit import into_namespace, wait
from kubernetes.client.exceptions import ApiException
from test_cluster_chart import rendered  # noqa: F401 (a fixture)

pytestmark = pytest.mark.cluster

ADMIN_TOKEN = secrets.token_hex(32)
PASSWORD = "chart-test-" + secrets.token_hex(8)
# the upgrade's changed values: a GPU pool added, the spawn limit lowered
CHANGED = {
    "hub": {
        "config": {
            "JupyterHub": {"concurrent_spawn_limit": 16},
            "KubeSandboxSpawner": {
                "gpu_pools": {
                    "a100": {
                        "resource": "nvidia.com/gpu",
                        "node_selector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
                        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                        "priority_class": "aifhub-sandbox-gpu",
                    }
                }
            },
        }
    }
}
# The test site's values (k8s/README.md: a site values file beside the rendered one). Each says why:
SITE = {
    # helm waits for the pre-install hook's awaiter Job, whose image (a Go binary of the chart) has no stand-in here
    "prePuller": {"hook": {"enabled": False}},
    "hub": {
        # no PostgreSQL in the test: the hub's database on its own volume (the chart's sqlite-pvc), the ledger in
        # the aifhub-state volume (the service's default when AIFHUB_DB_URL is empty)
        "db": {"type": "sqlite-pvc", "url": None},
        "extraEnv": {"AIFHUB_DB_URL": ""},
        # the test's login (a site configures its own authenticator) and an admin token for the test's API calls
        "config": {
            "JupyterHub": {"authenticator_class": "shared-password"},
            "SharedPasswordAuthenticator": {"user_password": PASSWORD},
            "Authenticator": {"allow_all": True},
        },
        "services": {"test-admin": {"apiToken": ADMIN_TOKEN}},
        "loadRoles": {"admin": {"services": ["test-admin"]}},
        # pods of the test kubelet share the host's network, with an address each: the hub listens on its pod's
        # address (the chart's `http://:8081` is every address, the same as the pod's in a cluster)
        "extraConfig": {
            "90-test-pod-network": "import os\nc.JupyterHub.hub_bind_url = f\"http://{os.environ['POD_IP']}:8081\"\n"
        },
    },
    "proxy": {
        "chp": {  # the same for the proxy (its `--ip=` and `--api-ip=` are every address)
            "extraEnv": {"POD_IP": {"valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}},
            "extraCommandLineFlags": ["--ip=$(POD_IP)", "--api-ip=$(POD_IP)"],
        }
    },
}
OPERATOR_FILES = ("00-", "10-", "20-", "21-", "22-", "40-")  # what k8s/README.md step 5 applies


@pytest.fixture(scope="module")
def release(kube_cluster, tmp_path_factory, rendered):  # noqa: F811
    source = chart_source()
    if source is None:
        pytest.skip("the zero-to-jupyterhub chart is not here: set AIFHUB_Z2JH_CHART or put it at ../shared/z2jh/chart")
    kube = kube_cluster
    base = tmp_path_factory.mktemp("install")
    chart = prepared_chart(source, base / "jupyterhub")
    helm = Helm(helm_binary(), base / "helm-home", kube.kubeconfig)
    site = base / "site.yaml"
    site.write_text(yaml.safe_dump(SITE))
    ns = kube.namespace("aifhub-install")
    # k8s/README.md step 5: the Secret and aifhub's manifests, applied by the operator (not part of the release)
    kube.core.create_namespaced_secret(
        ns,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "aifhub-secrets"},
            "stringData": {"internal-token": "t" * 64},
        },
    )
    docs = [
        d
        for path in sorted((rendered / "manifests").glob("*.yaml"))
        if path.name.startswith(OPERATOR_FILES)
        for d in yaml.safe_load_all(path.read_text())
        if d
    ]
    kube.apply([d for d in docs if d["kind"] == "PriorityClass"])
    kube.apply(into_namespace([d for d in docs if d["kind"] != "PriorityClass"], ns), ns)
    values = ["-f", rendered / "values.yaml", "-f", site]
    install = ["upgrade", "--install", "aifhub", chart, "--namespace", ns, *values, "--timeout", "15m"]
    yield {"kube": kube, "helm": helm, "ns": ns, "chart": chart, "values": values, "install": install, "base": base}
    try:
        helm("uninstall", "aifhub", "--namespace", ns)
    except Exception:  # already uninstalled by the test
        pass
    kube.delete_namespace(ns)


def status(r):
    return json.loads(r["helm"]("status", "aifhub", "--namespace", r["ns"], "-o", "json"))


def hub_values(r):
    secret = r["kube"].core.read_namespaced_secret("hub", r["ns"])
    return yaml.safe_load(base64.b64decode(secret.data["values.yaml"]))


def chart_pods(r):
    pods = r["kube"].core.list_namespaced_pod(r["ns"], label_selector="app.kubernetes.io/managed-by=Helm").items
    pods += r["kube"].core.list_namespaced_pod(r["ns"], label_selector="app=jupyterhub").items
    return {p.metadata.labels.get("component") for p in pods}


def running(r, component):
    pods = r["kube"].core.list_namespaced_pod(r["ns"], label_selector=f"component={component}").items
    return [
        p
        for p in pods
        if p.status.phase == "Running"
        and all(c.ready and not c.restart_count for c in p.status.container_statuses or [])
    ]


def public_url(r):
    """proxy-public's address (the test kubelet forwards each Service's port to its pods; services.json lists them)."""
    path = r["kube"].local.dir / "kubelet" / "services.json"
    table = json.loads(path.read_text()) if path.exists() else {}
    return f"http://{table[r['ns'] + '/proxy-public']}:80" if r["ns"] + "/proxy-public" in table else None


def fetch(url, **kw):
    try:
        return requests.get(url, timeout=10, **kw)
    except requests.RequestException:
        return None


def serves_login(r):
    url = public_url(r)
    answer = url and fetch(url + "/hub/login")
    return answer is not None and answer.status_code == 200 and 'name="username"' in answer.text


def serves_did(r):
    url = public_url(r)
    answer = url and fetch(url + "/services/aifhub/did.json")
    # the service's own answer (a JSON refusal: this issuer, with no public address, uses did:key identifiers),
    # not the proxy's or the hub's error page
    if answer is None or "json" not in answer.headers.get("Content-Type", ""):
        return False
    return answer.status_code == 404 and "did:key" in answer.json().get("message", "")


def hub_api(r, method, path, **kw):
    headers = {"Authorization": f"token {ADMIN_TOKEN}"}
    return requests.request(method, f"{public_url(r)}/hub/api/{path}", headers=headers, timeout=60, **kw)


def service_api(r, method, path, **kw):
    headers = {"Authorization": f"token {ADMIN_TOKEN}"}
    return requests.request(method, f"{public_url(r)}/services/aifhub/api/v1/{path}", headers=headers, timeout=90, **kw)


def learner_spawns(r, name, course):
    """What the learner's browser does through proxy-public: log in, the spawn form, the course chosen."""
    url = public_url(r)
    session = requests.Session()
    session.get(f"{url}/hub/login", timeout=30)
    answer = session.post(
        f"{url}/hub/login",
        data={"username": name, "password": PASSWORD, "_xsrf": session.cookies.get("_xsrf")},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text[:500]
    form = session.get(f"{url}/hub/spawn", timeout=30)
    assert form.status_code == 200 and f'value="{course}"' in form.text, form.text[:2000]
    answer = session.post(
        f"{url}/hub/spawn",
        data={"course": course, "_xsrf": session.cookies.get("_xsrf")},
        allow_redirects=False,
        timeout=60,
    )
    assert answer.status_code == 302, (answer.status_code, answer.text[:2000])


def server_ready(r, name):
    answer = hub_api(r, "GET", f"users/{name}")
    return answer.status_code == 200 and (answer.json()["servers"].get("") or {}).get("ready")


def server_answers(r, name):
    """The learner's own server (Jupyter Server's API), not the hub, answers at /user/<name>/ through the proxy."""
    token = hub_api(r, "POST", f"users/{name}/tokens", json={"note": "chart test"}).json()["token"]
    answer = fetch(f"{public_url(r)}/user/{name}/api", headers={"Authorization": f"token {token}"})
    return answer is not None and answer.status_code == 200 and "version" in answer.json()


def run_cell(r, name, code):
    from kernelclient import execute

    answer = hub_api(r, "POST", f"users/{name}/tokens", json={"note": "chart test"})
    assert answer.status_code in (200, 201), answer.text
    try:
        return execute(public_url(r), f"/user/{name}/", answer.json()["token"], code, 90)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{pod_logs(r, 'singleuser-server')}\n{pod_logs(r, 'hub')[-6000:]}") from None


def sessions(r, name):
    answer = service_api(r, "GET", "usage", params={"user": name, "course": "gpu-fundamentals"})
    assert answer.status_code == 200, answer.text
    return answer.json()["sessions"]


def pod_logs(r, component):
    out = []
    for p in r["kube"].core.list_namespaced_pod(r["ns"], label_selector=f"component={component}").items:
        folder = r["kube"].local.dir / "kubelet" / "pods" / p.metadata.uid
        for log in folder.glob("*.log"):
            out.append(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
    kubelet = (r["kube"].local.dir / "kubelet.log").read_text(errors="replace").splitlines()
    return "\n".join(out + [line for line in kubelet if "services" in line or "Error" in line][-40:])


def test_install_upgrade_uninstall(release):
    r, kube, ns = release, release["kube"], release["ns"]
    r["helm"](*r["install"])
    answer = status(r)
    assert answer["info"]["status"] == "deployed" and answer["version"] == 1
    for name in ("hub", "proxy", "user-scheduler"):
        kube.apps.read_namespaced_deployment(name, ns)
    services = {s.metadata.name for s in kube.core.list_namespaced_service(ns).items}
    assert {"hub", "proxy-api", "proxy-public"} <= services
    # the controllers create the chart's pods, and Pod Security 'restricted' admits them (for real)
    wanted = {"hub", "proxy", "user-scheduler", "continuous-image-puller", "user-placeholder"}
    wait(lambda: wanted <= chart_pods(r), 120, f"the chart's pods {sorted(wanted)} created", lambda: str(chart_pods(r)))
    refused = [
        e.message for e in kube.core.list_namespaced_event(ns).items if "violates PodSecurity" in (e.message or "")
    ]
    assert not refused, refused
    # the hub and the proxy run (the hub with the chart's own jupyterhub_config.py, z2jh.py and values from its
    # ConfigMap and Secret); the hub's login page answers through the proxy-public Service
    wait(
        lambda: serves_login(r),
        240,
        "the hub's login page through proxy-public",
        lambda: pod_logs(r, "hub") + pod_logs(r, "proxy"),
    )
    # the aifhub service runs in the hub pod where the values put it, and serves through the proxy
    wait(lambda: serves_did(r), 120, "the aifhub service answering through proxy-public", lambda: pod_logs(r, "hub"))
    # the user scheduler (the control plane's kube-scheduler) and the image pullers and placeholders (pause) run
    time.sleep(12)  # long enough for a crash (the kubelet restarts a failed container after 10 s)
    for component in ("user-scheduler", "continuous-image-puller", "user-placeholder"):
        wait(lambda c=component: running(r, c), 120, f"{component} running", lambda c=component: pod_logs(r, c))
    assert hub_values(r)["hub"]["config"]["JupyterHub"]["concurrent_spawn_limit"] == 32

    # a learner logs in through proxy-public, spawns a GPU course (KubeSandboxSpawner, from hub.config) and runs a cell
    answer = service_api(r, "POST", "allocations", json={"id": "EHPC-AIF-2026-PG01", "gpu_hours": 100, "title": "t"})
    assert answer.status_code in (201, 404, 409), answer.text  # 404: a service without allocations admits without one
    learner_spawns(r, "learner1", "gpu-fundamentals")
    wait(lambda: server_ready(r, "learner1"), 240, "learner1's course server ready", lambda: pod_logs(r, "hub"))
    pod = kube.dict(kube.core.read_namespaced_pod("jupyter-learner1", ns))
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    cell = "import os; print(os.environ['AIFHUB_COURSE'], os.environ['NVIDIA_VISIBLE_DEVICES'])"
    course, device = run_cell(r, "learner1", cell).split()
    assert course == "gpu-fundamentals" and device.startswith("GPU-"), (course, device)
    learner_pod = pod["metadata"]["uid"]
    wait(lambda: sessions(r, "learner1"), 60, "learner1's session in the ledger")
    ledger = sessions(r, "learner1")
    hub_pod = {p.metadata.uid for p in running(r, "hub")}
    generated = ("hub.config.ConfigurableHTTPProxy.auth_token", "hub.config.JupyterHub.cookie_secret")
    secrets = {k: kube.core.read_namespaced_secret("hub", ns).data[k] for k in generated}

    # helm upgrade with changed values (a GPU pool added, the spawn limit lowered): the values change, the chart's
    # generated secrets stay, the hub restarts with them, and the running learner's server and the ledger stay
    changed = r["base"] / "changed.yaml"
    changed.write_text(yaml.safe_dump(CHANGED))
    r["helm"]("upgrade", "aifhub", r["chart"], "--namespace", ns, *r["values"], "-f", changed, "--timeout", "15m")
    assert status(r)["version"] == 2
    config = hub_values(r)["hub"]["config"]
    assert config["JupyterHub"]["concurrent_spawn_limit"] == 16
    assert {"cpu", "gpu", "a100"} <= set(config["KubeSandboxSpawner"]["gpu_pools"])
    assert {k: kube.core.read_namespaced_secret("hub", ns).data[k] for k in generated} == secrets
    wait(
        lambda: {p.metadata.uid for p in running(r, "hub")} - hub_pod and serves_login(r),
        240,
        "the upgraded hub's login page",
        lambda: pod_logs(r, "hub"),
    )
    assert kube.core.read_namespaced_pod("jupyter-learner1", ns).metadata.uid == learner_pod
    wait(
        lambda: server_ready(r, "learner1"), 60, "learner1's server ready after the upgrade", lambda: pod_logs(r, "hub")
    )
    # the new hub puts the learner's route back in the proxy as it starts (check_routes); then the server answers
    wait(lambda: server_answers(r, "learner1"), 60, "learner1's server through proxy-public after the upgrade")
    assert run_cell(r, "learner1", "import os; print(os.environ['AIFHUB_COURSE'])").strip() == "gpu-fundamentals"
    # the ledger: the learner's session is the same one, still open, its charges kept; the allocation is there
    after = {row["session"]: row for row in sessions(r, "learner1")}
    for row in ledger:
        assert row["session"] in after, (ledger, after)
        assert after[row["session"]]["state"] == row["state"] and row["state"] != "ended", (row, after)
        assert after[row["session"]]["gpu_hours"] >= row["gpu_hours"], (row, after)
    allocations = service_api(r, "GET", "allocations").json()["allocations"]
    assert "EHPC-AIF-2026-PG01" in json.dumps(allocations), allocations

    # helm uninstall: the chart's objects go (its priority classes too); aifhub's volumes of state stay
    r["helm"]("uninstall", "aifhub", "--namespace", ns, "--wait", "--cascade", "foreground")

    def hub_gone():
        try:
            kube.apps.read_namespaced_deployment("hub", ns)
        except ApiException as exc:
            assert exc.status == 404, exc
            return True
        return False

    # helm's --wait can return while the garbage collector still finishes the Deployment it deleted
    wait(hub_gone, 60, "the hub Deployment gone after helm uninstall")
    classes = kube.dynamic.resources.get(api_version="scheduling.k8s.io/v1", kind="PriorityClass")
    names = {c["metadata"]["name"] for c in classes.get().to_dict()["items"]}
    assert not names & {"aifhub-default-priority", "aifhub-user-placeholder-priority", "aifhub-image-puller-priority"}
    claims = {c.metadata.name for c in kube.core.list_namespaced_persistent_volume_claim(ns).items}
    assert {"aifhub-state", "aifhub-grading"} <= claims
    assert "aifhub-learner1--gpu-fundamentals" in claims  # the learner's course volume (KubeSpawner's, not helm's)
    kube.core.read_namespaced_secret("aifhub-secrets", ns)

    # installed again, the service finds its ledger on the aifhub-state volume: the allocation and the session
    r["helm"](*r["install"])
    wait(lambda: serves_did(r), 240, "the service answering after the new install", lambda: pod_logs(r, "hub"))
    allocations = service_api(r, "GET", "allocations").json()["allocations"]
    assert "EHPC-AIF-2026-PG01" in json.dumps(allocations), allocations
    assert {row["session"] for row in ledger} <= {row["session"] for row in sessions(r, "learner1")}
