"""The zero-to-jupyterhub (z2jh) Helm values for aifhub."""

from .. import __version__
from ..kube import podspec
from . import COURSES_DIR, IMAGES_DIR, SECRET_NAME, SERVICE_PORT, STATE_DIR
from ..kube.grading_job import GRADING_MOUNT, GRADING_PVC

SERVICE_NAME = "aifhub"
HUB_REPOSITORY = "aifhub/hub"
POSTGRES_HOST = "aifhub-postgresql"  # a PostgreSQL reachable in the namespace (see k8s/README.md)
HUB_DB_URL = f"postgresql+psycopg2://aifhub@{POSTGRES_HOST}:5432/jupyterhub"
LEDGER_DB_URL = f"postgresql+psycopg2://aifhub@{POSTGRES_HOST}:5432/aifhub"

HUB_EXTRA_CONFIG = """\
# aifhub: the course spawner, the aifhub service beside the hub, roles (aifhub.hubside.z2jh)
from aifhub.hubside.z2jh import configure_z2jh

configure_z2jh(c)  # noqa: F821 (c is JupyterHub's config object)
"""


def spawner_config(pools=None, registry=""):
    """``hub.config.KubeSandboxSpawner``: GPU pools, guarantees, per-course volumes."""
    return {
        "registry": registry,
        "gpu_pools": podspec.validate_pools(pools if pools is not None else podspec.DEFAULT_POOLS),
        "cpu_guarantee_fraction": 0.25,
        "mem_guarantee_fraction": 0.5,
        "shm_fraction": 0.25,
        "storage_capacity": "10Gi",
        "course_pvc_name_template": "aifhub-{username}--{course}",
    }  # images_dir: $AIFHUB_IMAGES (hub.extraEnv)


def prepull_images(pools, images, registry=""):
    """``prePuller.extraImages``: each pool's images, keyed ``<pool>-<image>`` (each image listed once)."""
    extra, seen = {}, set()
    for kind, pool in sorted(pools.items()):
        for name in pool.get("images", []):
            image = images.get(name)
            if image is None or image.reference in seen:
                continue
            seen.add(image.reference)
            ref = podspec.image_reference(image, registry)
            repo, tag = ref.rsplit(":", 1)
            extra[f"{kind}-{name}".replace(".", "-")] = {"name": repo, "tag": tag}
    return extra


def env_secret(key):
    return {"valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": key}}}


def z2jh_values(images, pools=None, registry="", hub_tag=None):
    """The values file for ``helm upgrade --install aifhub jupyterhub/jupyterhub -f values.yaml``."""
    pools = podspec.validate_pools(pools if pools is not None else podspec.DEFAULT_POOLS)
    hub_image = images.get("hub")
    gpu_taint = {"key": podspec.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
    return {
        "hub": {
            "image": {
                "name": (f"{registry.rstrip('/')}/" if registry else "")
                + (hub_image.repository if hub_image else HUB_REPOSITORY),
                "tag": hub_tag or (hub_image.tag if hub_image else __version__),
            },
            # hub.db.password (exported as PGPASSWORD) comes from the secrets values file
            "db": {"type": "postgres", "url": HUB_DB_URL, "upgrade": True},
            # sandboxes reach the aifhub service (nbgrader's exchange) at hub:<port>, like the hub API
            "service": {"extraPorts": [{"name": "aifhub", "port": SERVICE_PORT, "targetPort": SERVICE_PORT}]},
            "config": {
                "JupyterHub": {"spawner_class": "aifhub-kube", "concurrent_spawn_limit": 32},
                "KubeSandboxSpawner": spawner_config(pools, registry),
            },
            # the service's url and process (python -m aifhub.service --gpus=kubernetes ...) are set by extraConfig
            "services": {SERVICE_NAME: {"display": True, "oauth_no_confirm": True}},
            "extraConfig": {"10-aifhub": HUB_EXTRA_CONFIG},
            "extraEnv": {
                "POD_IP": {"valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                "AIFHUB_INTERNAL_TOKEN": env_secret("internal-token"),
                "AIFHUB_SERVICE_PORT": str(SERVICE_PORT),
                "AIFHUB_STATE_DIR": STATE_DIR,
                "AIFHUB_COURSES": COURSES_DIR,
                "AIFHUB_IMAGES": IMAGES_DIR,
                "AIFHUB_DB_URL": LEDGER_DB_URL,
                "AIFHUB_METER_INTERVAL": "60",
            },
            "extraVolumes": [
                {"name": "aifhub-state", "persistentVolumeClaim": {"claimName": "aifhub-state"}},
                {"name": "aifhub-grading", "persistentVolumeClaim": {"claimName": GRADING_PVC}},
            ],
            "extraVolumeMounts": [
                {"name": "aifhub-state", "mountPath": STATE_DIR},
                {"name": "aifhub-grading", "mountPath": GRADING_MOUNT},
            ],
            "networkPolicy": {
                "enabled": True,
                # the proxy reaches the aifhub service, which runs in the hub pod
                "ingress": [
                    {
                        "ports": [{"port": SERVICE_PORT, "protocol": "TCP"}],
                        "from": [{"podSelector": {"matchLabels": {"hub.jupyter.org/network-access-hub": "true"}}}],
                    }
                ],
                "egressAllowRules": {"privateIPs": True, "cloudMetadataServer": False},
            },
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        },
        "proxy": {
            "chp": {"networkPolicy": {"enabled": True}},
            "service": {"type": "ClusterIP"},
        },
        "singleuser": {
            # a fallback only: every course sets its own image, resources and pool
            "image": {
                "name": "aifhub/sandbox-cpu-base",
                "tag": images["cpu-base"].tag if "cpu-base" in images else "latest",
            },
            "cmd": "jupyterhub-singleuser",
            "defaultUrl": "/lab",
            "startTimeout": 600,  # large CUDA images on a fresh node take minutes to pull
            "uid": podspec.SANDBOX_UID,
            "fsGid": podspec.SANDBOX_GID,
            "allowPrivilegeEscalation": False,
            "storage": {"type": "none"},  # per-course volumes are the spawner's (course_pvc_name_template)
            # the privileged iptables init container breaks the restricted profile; the network policy blocks metadata
            "cloudMetadata": {"blockWithIptables": False},
            "networkPolicy": {
                "enabled": True,
                "egressAllowRules": {"cloudMetadataServer": False, "privateIPs": False, "nonPrivateIPs": True},
            },
            "extraLabels": {"hub.jupyter.org/network-access-hub": "true", "aifhub.io/managed-by": "aifhub"},
            "memory": {"guarantee": "1G", "limit": "2G"},
        },
        "scheduling": {
            "userScheduler": {"enabled": True},
            "podPriority": {
                "enabled": True,
                "globalDefault": False,
                "defaultPriority": 0,
                "imagePullerPriority": -5,
                "userPlaceholderPriority": -10,
            },
            # one large placeholder beats many small ones (head-of-line blocking on new nodes)
            "userPlaceholder": {
                "enabled": True,
                "replicas": 1,
                "resources": {"requests": {"cpu": "4", "memory": "16Gi"}},
            },
            "userPods": {"nodeAffinity": {"matchNodePurpose": "prefer"}},
        },
        "prePuller": {
            "hook": {"enabled": True},
            "continuous": {"enabled": True},
            "pullProfileListImages": False,
            "extraImages": prepull_images(pools, images, registry),
            "extraTolerations": [gpu_taint],
        },
        "cull": {"enabled": True, "timeout": 1800, "every": 300, "concurrency": 10, "maxAge": 0, "users": False},
        "debug": {"enabled": False},
    }
