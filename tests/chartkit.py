"""The zero-to-jupyterhub chart in the tests: where its source is, a copy with its chartpress placeholders set,
helm (built from its Go module by scripts/build-helm), and the chart's objects as the API server gets them.

The chart source is an operator's `helm pull --untar` of the pinned chart, named by ``AIFHUB_Z2JH_CHART``, or else
``../shared/z2jh/chart`` beside the checkout. A chart taken from the chart's git repository (not a published
release) still carries chartpress's placeholders (``version: 0.0.1-set.by.chartpress``, image tags
``set-by-chartpress``); :func:`prepared_chart` sets them on a copy, as chartpress does when it publishes one.
"""

import base64
import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "scripts" / "build-helm"
Z2JH_COMMIT = "48ea50e"  # the chart aifhub's values are pinned to (k8s/README.md, step 1)
# chartpress's development versions end in `.n<commits since the tag>.h<commit>`; the chart prints the
# commit from it (NOTES.txt). The tag and count are unknown for a checkout, so: the placeholder's 0.0.1, n0.
CHART_VERSION = f"0.0.1-0.dev.git.n0.h{Z2JH_COMMIT}"
RELEASE = "aifhub"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


class ChartError(RuntimeError):
    """Helm could not be built or a helm command failed; the message has helm's own words."""


def chart_source():
    """The chart folder (``AIFHUB_Z2JH_CHART``, else ``../shared/z2jh/chart``), or None when neither exists."""
    named = os.environ.get("AIFHUB_Z2JH_CHART")
    for path in ([Path(named)] if named else []) + [REPO.parent / "shared" / "z2jh" / "chart"]:
        if (path / "Chart.yaml").is_file():
            return path
    return None


def prepared_chart(source, dest, version=CHART_VERSION):
    """A copy of the chart at ``dest`` with chartpress's placeholders (chart version, image tags) set to ``version``.

    A published chart has none: it is copied unchanged. Text substitution, so the values file keeps its comments."""
    dest = Path(dest)
    shutil.copytree(source, dest)
    chart_yaml = dest / "Chart.yaml"
    text = chart_yaml.read_text()
    if "set.by.chartpress" in text:
        chart_yaml.write_text(re.sub(r"(?m)^version: .*$", f"version: {version}", text))
    values = dest / "values.yaml"
    values.write_text(values.read_text().replace('tag: "set-by-chartpress"', f'tag: "{version}"'))
    return dest


def helm_binary():
    """Helm: ``$AIFHUB_HELM``, else built (or reused from the cache) by scripts/build-helm."""
    if os.environ.get("AIFHUB_HELM"):
        return Path(os.environ["AIFHUB_HELM"])
    proc = subprocess.run([str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise ChartError(f"{BUILD_SCRIPT.name} failed (exit {proc.returncode}); its output is above")
    return Path(proc.stdout.strip().splitlines()[-1])


def build_info(binary):
    """What scripts/build-helm recorded of the cold build (version, Go, seconds, cores)."""
    path = Path(binary).parent.parent / "build.json"
    return json.loads(path.read_text()) if path.exists() else {}


class Helm:
    """helm with its own config, cache and data folders under ``home`` (nothing of the user's is read or written)."""

    def __init__(self, binary, home, kubeconfig=None):
        self.binary = str(binary)
        home = Path(home)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        if kubeconfig:
            self.env["KUBECONFIG"] = str(kubeconfig)

    def __call__(self, *args, timeout=300):
        proc = subprocess.run(
            [self.binary, *map(str, args)], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            raise ChartError(f"helm {' '.join(map(str, args))} failed (exit {proc.returncode}):\n{proc.stderr}")
        return proc.stdout

    def version(self):
        return self("version", "--template", "{{.Version}}").strip()

    def template(self, chart, namespace, values, release=RELEASE):
        """``helm template`` (hooks included, as ``helm install`` creates them); returns the objects."""
        args = ["template", release, chart, "--namespace", namespace]
        for path in values:
            args += ["--values", path]
        return [doc for doc in yaml.safe_load_all(self(*args)) if doc]


def pod_of(workload):
    """The Pod a workload's controller would create from its template (Pod Security enforces on Pods only: on
    Deployments, DaemonSets, StatefulSets and Jobs the API server merely warns)."""
    spec = workload["spec"]["template"]
    name = workload["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-{workload['kind'].lower()}",
            "namespace": workload["metadata"].get("namespace"),
            "labels": copy.deepcopy(spec.get("metadata", {}).get("labels", {})),
            "annotations": copy.deepcopy(spec.get("metadata", {}).get("annotations", {})),
        },
        "spec": copy.deepcopy(spec["spec"]),
    }


# Run inside the hub's files (below): JupyterHub loads the chart's jupyterhub_config.py as the hub pod's
# `jupyterhub --config /usr/local/etc/jupyterhub/jupyterhub_config.py` does, and initializes (database, roles,
# services, the proxy's and the spawner's settings), without starting to serve. Then every config section is
# matched against the classes of this JupyterHub, so a setting it no longer knows is named.
HUB_CONFIG_CHECK = r"""
import asyncio, json, logging, sys
import jupyterhub, kubespawner
from jupyterhub import orm
from jupyterhub.app import JupyterHub
from aifhub.hubside.kube import KubeSandboxSpawner

warnings = []
class Catch(logging.Handler):
    def emit(self, record):
        if record.levelno >= logging.WARNING:
            warnings.append(record.getMessage())

app = JupyterHub()
app.log.addHandler(Catch())
asyncio.run(app.initialize(["--config", "/usr/local/etc/jupyterhub/jupyterhub_config.py", *sys.argv[1:]]))
classes = {c.__name__: c for c in app._classes_with_config_traits()}
classes.update({c.__name__: c for c in KubeSandboxSpawner.mro() if hasattr(c, "class_trait_names")})
unknown = {}
for section, settings in app.config.items():
    cls = classes.get(section)
    if cls is None:
        unknown[section] = "no such class"
        continue
    names = set(cls.class_trait_names(config=True))
    missing = sorted(set(settings) - names)
    if missing:
        unknown[section] = missing
print(json.dumps({
    "jupyterhub": jupyterhub.__version__,
    "kubespawner": kubespawner.__version__,
    "spawner_class": app.spawner_class.__name__,
    "services": sorted(s.name for s in app._service_map.values()),
    "roles": sorted(r.name for r in app.db.query(orm.Role)),
    "proxy_api_url": app.proxy.api_url,
    "hub_connect_url": app.hub_connect_url,
    "sections": sorted(app.config),
    "unknown": unknown,
    "warnings": warnings,
}))
"""


def hub_files(templated, dest):
    """The hub pod's /usr/local/etc/jupyterhub as its volumes make it: the chart's ConfigMap (and its two files),
    the chart's Secret, each decoded from the rendered objects."""
    dest = Path(dest)
    [config] = [o for o in templated if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "hub"]
    [secret] = [o for o in templated if o["kind"] == "Secret" and o["metadata"]["name"] == "hub"]
    (dest / "config").mkdir(parents=True)
    (dest / "secret").mkdir()
    for key, text in config["data"].items():
        (dest / "config" / key).write_text(text)
    for key in ("jupyterhub_config.py", "z2jh.py"):
        (dest / key).write_text(config["data"][key])
    for key, data in secret.get("data", {}).items():
        (dest / "secret" / key).write_bytes(base64.b64decode(data))
    return dest


def hub_env(templated, namespace, pod_ip, secrets, cluster_ips):
    """The hub container's environment as a kubelet sets it: its env (values, fieldRefs, secretKeyRefs from the
    chart's Secrets and ``secrets`` {(name, key): value}) and the Services' variables (with ``cluster_ips``)."""
    from localcluster.services import service_env

    chart_secrets = {
        (o["metadata"]["name"], k): base64.b64decode(v).decode()
        for o in templated
        if o["kind"] == "Secret"
        for k, v in o.get("data", {}).items()
    }
    secrets = {**chart_secrets, **secrets}
    services = [copy.deepcopy(o) for o in templated if o["kind"] == "Service"]
    for svc in services:
        svc["spec"]["clusterIP"] = cluster_ips[svc["metadata"]["name"]]
    env = service_env(services)
    [hub] = [o for o in templated if o["kind"] == "Deployment" and o["metadata"]["name"] == "hub"]
    [container] = hub["spec"]["template"]["spec"]["containers"]
    fields = {"metadata.namespace": namespace, "status.podIP": pod_ip, "metadata.name": "hub-0"}
    for item in container.get("env", []):
        source = item.get("valueFrom")
        if source is None:
            env[item["name"]] = item.get("value", "")
        elif "fieldRef" in source:
            env[item["name"]] = fields[source["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            if (ref["name"], ref["key"]) in secrets:
                env[item["name"]] = secrets[ref["name"], ref["key"]]
            elif not ref.get("optional"):
                raise KeyError(f"the hub's env {item['name']} names the Secret key {ref['name']}/{ref['key']}")
    return env


def run_hub_config_check(files, env, argv=(), timeout=120):
    """JupyterHub (this environment's: the hub image's stand-in) loading the chart's config from ``files`` mounted
    at /usr/local/etc/jupyterhub, in a bubblewrap sandbox; returns HUB_CONFIG_CHECK's answer and the output."""
    import sys

    cmd = [shutil.which("bwrap"), "--dev-bind", "/", "/", "--tmpfs", "/usr/local/etc"]
    cmd += ["--ro-bind", str(files), "/usr/local/etc/jupyterhub", "--chdir", "/tmp", "--clearenv"]
    for name, value in {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}.items():
        cmd += ["--setenv", name, value]
    cmd += ["--", sys.executable, "-c", HUB_CONFIG_CHECK, *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise ChartError(f"JupyterHub did not load the chart's config (exit {proc.returncode}):\n{output[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), output
