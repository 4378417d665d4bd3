"""GPU kinds on Kubernetes: the NVIDIA device plugin's configuration per node pool, and the pool a kind's pods use.

The device plugin (GPU operator) reads one ConfigMap holding several named configurations; a node takes the one
its label ``nvidia.com/device-plugin.config`` names. aifhub renders one configuration per time-slice or MPS kind
(``aifhub-<kind>``): ``sharing.timeSlicing`` or ``sharing.mps`` with the kind's replicas, renamed to
``nvidia.com/gpu.shared`` so that a pod asking for a whole ``nvidia.com/gpu`` never lands on a share by mistake,
and ``failRequestsGreaterThanOne`` (two shares of one GPU are not two GPUs). MIG kinds ride on the MIG manager's
layouts (``nvidia.com/mig.config: all-<profile>``) and the mixed strategy (``nvidia.com/mig-<profile>``).
"""

import yaml

from .podspec import GPU_RESOURCE

SHARED_RESOURCE = "nvidia.com/gpu.shared"  # what renameByDefault makes of nvidia.com/gpu on a sharing node
CONFIG_LABEL = "nvidia.com/device-plugin.config"
_GPU_TAINT = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
_STRATEGY = {"timeslice": "time-slicing", "mps": "mps"}  # the value GPU feature discovery labels nodes with


def config_name(kind):
    return f"aifhub-{kind.name}"


def device_plugin_config(kind=None):
    """The device plugin's configuration for a node pool of ``kind`` (None: the default, no sharing)."""
    config = {"version": "v1", "flags": {"migStrategy": "mixed"}}
    if kind is not None and kind.shared:
        key = "timeSlicing" if kind.sharing == "timeslice" else "mps"
        config["sharing"] = {
            key: {
                "renameByDefault": True,
                "failRequestsGreaterThanOne": True,
                "resources": [{"name": GPU_RESOURCE, "replicas": kind.replicas}],
            }
        }
    return config


def device_plugin_data(kinds):
    """The ConfigMap's data: ``default`` plus one configuration per sharing kind, as YAML documents."""
    data = {"default": yaml.safe_dump(device_plugin_config(), sort_keys=False)}
    for kind in kinds.values():
        if kind.shared:
            data[config_name(kind)] = yaml.safe_dump(device_plugin_config(kind), sort_keys=False)
    return data


def resource_for(kind):
    if kind.sharing == "mig":
        return f"nvidia.com/mig-{kind.profile}"
    return SHARED_RESOURCE if kind.shared else GPU_RESOURCE


def node_selector(kind):
    if kind.sharing == "mig":
        return {"nvidia.com/mig.config": f"all-{kind.profile}"}
    if kind.shared:
        return {CONFIG_LABEL: config_name(kind)}
    return {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.sharing-strategy": "none"}


def pool_for_kind(kind):
    """The ``gpu_pools`` entry of a kind no pool is configured for."""
    return {
        "resource": resource_for(kind),
        "node_selector": node_selector(kind),
        "tolerations": [dict(_GPU_TAINT)],
        "priority_class": "aifhub-sandbox-gpu",
        "images": ["pytorch-cuda"],
    }


def pools_with_kinds(pools, kinds):
    """``pools`` with a pool for every GPU kind it lacks (a configured pool of a kind's name wins)."""
    out = dict(pools)
    for kind in (kinds or {}).values():
        out.setdefault(kind.name, pool_for_kind(kind))
    return out


def node_labels(kind):
    """Labels a node pool of ``kind`` carries (the admin sets the config label; feature discovery the rest)."""
    if not kind.shared:
        return node_selector(kind)
    return {
        CONFIG_LABEL: config_name(kind),
        "nvidia.com/gpu.replicas": str(kind.replicas),
        "nvidia.com/gpu.sharing-strategy": _STRATEGY[kind.sharing],
    }
