"""What the z2jh chart's hub configuration makes of a values file, for offline use.

The chart's ``jupyterhub_config.py`` maps ``singleuser.*`` and ``scheduling.*``
onto KubeSpawner traits, ``hub.config`` onto traitlets config and
``hub.services`` onto ``c.JupyterHub.services``, then runs ``hub.extraConfig``.
This module does the same for the keys aifhub's values use, so that
``aifhub k8s pods`` and the tests build the pods a deployed hub would.
"""

from traitlets.config import Config

from . import CHART_APP_VERSION, NAMESPACE, RELEASE

_SINGLEUSER_TRAITS = {  # KubeSpawner trait: singleuser key
    "uid": "uid",
    "fs_gid": "fsGid",
    "start_timeout": "startTimeout",
    "cmd": "cmd",
    "default_url": "defaultUrl",
    "node_selector": "nodeSelector",
    "extra_labels": "extraLabels",
    "extra_annotations": "extraAnnotations",
    "allow_privilege_escalation": "allowPrivilegeEscalation",
    "extra_pod_config": "extraPodConfig",
}


def _get(values, dotted, default=None):
    node = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return default if node is None else node


def kubespawner_settings(values, release=RELEASE, namespace=NAMESPACE):
    """``c.KubeSpawner`` settings the chart derives from ``values`` (the subset that shapes user pods)."""
    su = values.get("singleuser", {})
    ks = {trait: su[key] for trait, key in _SINGLEUSER_TRAITS.items() if su.get(key) is not None}
    ks["namespace"] = namespace
    ks["common_labels"] = {
        "app": "jupyterhub",
        "heritage": "jupyterhub",
        "release": release,
        "chart": f"jupyterhub-{CHART_APP_VERSION}",
    }
    image = _get(values, "singleuser.image.name")
    if image:
        tag = _get(values, "singleuser.image.tag")
        ks["image"] = f"{image}:{tag}" if tag else image
    for trait, key in (
        ("mem_limit", "memory.limit"),
        ("mem_guarantee", "memory.guarantee"),
        ("cpu_limit", "cpu.limit"),
        ("cpu_guarantee", "cpu.guarantee"),
        ("extra_resource_limits", "extraResource.limits"),
        ("extra_resource_guarantees", "extraResource.guarantees"),
        ("environment", "extraEnv"),
    ):
        value = _get(su, key)
        if value is not None:
            ks[trait] = value
    ks["tolerations"] = list(su.get("extraTolerations") or [])
    for key in ("hub.jupyter.org/dedicated", "hub.jupyter.org_dedicated"):
        ks["tolerations"].append({"key": key, "operator": "Equal", "value": "user", "effect": "NoSchedule"})
    if _get(values, "scheduling.userScheduler.enabled", True):
        ks["scheduler_name"] = f"{release}-user-scheduler"
    if _get(values, "scheduling.podPriority.enabled", False):
        ks["priority_class_name"] = f"{release}-default-priority"
    purpose = _get(values, "scheduling.userPods.nodeAffinity.matchNodePurpose", "prefer")
    selector = {"matchExpressions": [{"key": "hub.jupyter.org/node-purpose", "operator": "In", "values": ["user"]}]}
    if purpose == "prefer":
        ks["node_affinity_preferred"] = [{"weight": 100, "preference": selector}]
    elif purpose == "require":
        ks["node_affinity_required"] = [selector]
    if _get(su, "storage.type", "dynamic") != "none":
        raise ValueError("aifhub's values use singleuser.storage.type: none (the spawner makes per-course volumes)")
    if _get(su, "cloudMetadata.blockWithIptables", True):
        raise ValueError(
            "singleuser.cloudMetadata.blockWithIptables adds a privileged init container; aifhub keeps it off"
        )
    return ks


def hub_config(values, release=RELEASE, namespace=NAMESPACE):
    """A traitlets Config as the chart builds it before ``hub.extraConfig`` (spawner and services parts)."""
    config = Config({"KubeSpawner": kubespawner_settings(values, release, namespace)})
    config.merge(Config(_get(values, "hub.config", {})))
    services = []
    for name, service in sorted(_get(values, "hub.services", {}).items()):
        service = dict(service, name=service.get("name", name))
        token = service.pop("apiToken", None)
        if token:
            service["api_token"] = token
        services.append(service)
    config.JupyterHub.services = services
    return config


def extra_config_snippets(values):
    """``hub.extraConfig`` code, in the order the chart runs it (sorted by key)."""
    extra = _get(values, "hub.extraConfig", {})
    return [extra[key] for key in sorted(extra)]
