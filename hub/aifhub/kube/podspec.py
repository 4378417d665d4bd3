"""A course's sandbox as KubeSpawner settings: a pure mapping, no Kubernetes API, no traitlets.

:func:`pod_settings` turns (course summary, image metadata, GPU pool) into the
values of KubeSpawner traits. :func:`validate_pools` checks the ``gpu_pools``
configuration and says what is wrong with it. The Kubernetes spawner and the
grading Job renderer both build on these.
"""

import re

from ..catalog.model import parse_duration, parse_memory

GPU_RESOURCE = "nvidia.com/gpu"
CPU_POOL = "cpu"  # the pool of CPU-only courses
COMPONENT_LABEL = "aifhub.io/component"
COURSE_LABEL = "aifhub.io/course"
GPU_KIND_LABEL = "aifhub.io/gpu-kind"
GRADEBOOK_LABEL = "aifhub.io/gradebook-access"  # instructors' pods: a network policy lets them reach PostgreSQL
HOME = "/home/jovyan"
SANDBOX_UID = 1000
SANDBOX_GID = 100
NOT_SANDBOXES = {"hub"}  # sandbox_images/ entries that are no sandbox (the hub image)

_GPU_TAINT = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}

# GPU kinds (and the CPU-only pool) a fresh deployment knows; admins replace them with gpu_pools.
DEFAULT_POOLS = {
    CPU_POOL: {
        "priority_class": "aifhub-sandbox-cpu",
        "images": ["cpu-base"],
    },
    "gpu": {
        "node_selector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [_GPU_TAINT],
        "priority_class": "aifhub-sandbox-gpu",
        "images": ["pytorch-cuda"],
    },
    "h100": {
        "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "tolerations": [_GPU_TAINT],
        "priority_class": "aifhub-sandbox-gpu",
        "images": ["pytorch-cuda"],
    },
    "mig-1g.10gb": {
        "resource": "nvidia.com/mig-1g.10gb",
        "node_selector": {"nvidia.com/mig.config": "all-1g.10gb"},
        "tolerations": [_GPU_TAINT],
        "priority_class": "aifhub-sandbox-gpu",
        "images": ["pytorch-cuda"],
    },
}

_POOL_FIELDS = {
    "resource": (str, "an extended resource name such as nvidia.com/gpu or nvidia.com/mig-1g.10gb"),
    "node_selector": (dict, "a mapping of node label to value"),
    "tolerations": (list, "a list of Kubernetes tolerations"),
    "priority_class": (str, "the name of a PriorityClass"),
    "environment": (dict, "a mapping of environment variable to value"),
    "images": (list, "a list of sandbox image names to pre-pull on this pool's nodes"),
    "cpu_guarantee_fraction": ((int, float), "a number in (0, 1]"),
    "mem_guarantee_fraction": ((int, float), "a number in (0, 1]"),
}
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_KIND = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
_RESOURCE = re.compile(r"^[a-z0-9.-]+/[A-Za-z0-9._-]+$")


class PodSpecError(ValueError):
    """A course cannot be turned into a pod: the message names what is missing or wrong."""


def _check_fraction(where, value):
    if isinstance(value, bool) or not 0 < value <= 1:
        raise PodSpecError(f"{where}: must be a number in (0, 1], got {value!r}")


def validate_pools(pools):
    """Check a ``gpu_pools`` mapping; return it with every pool's GPU resource filled in.

    Raises :class:`PodSpecError` naming the pool and field at fault.
    """
    if not isinstance(pools, dict):
        raise PodSpecError(f"gpu_pools must be a mapping of GPU kind to pool settings, got {type(pools).__name__}")
    checked = {}
    for kind, pool in pools.items():
        where = f"gpu_pools[{kind!r}]"
        if not isinstance(kind, str) or not _KIND.match(kind):
            raise PodSpecError(
                f"{where}: a GPU kind is lowercase letters, digits, '.' and '-' (like h100 or mig-1g.10gb)"
            )
        if not isinstance(pool, dict):
            raise PodSpecError(f"{where}: must be a mapping with keys {', '.join(sorted(_POOL_FIELDS))}")
        for field, value in pool.items():
            if field not in _POOL_FIELDS:
                raise PodSpecError(f"{where}: unknown field {field!r} (known: {', '.join(sorted(_POOL_FIELDS))})")
            expected, what = _POOL_FIELDS[field]
            if not isinstance(value, expected):
                raise PodSpecError(f"{where}.{field}: must be {what}, got {value!r}")
        for field in ("node_selector", "environment"):
            for k, v in pool.get(field, {}).items():
                if not isinstance(k, str) or not isinstance(v, str):
                    raise PodSpecError(
                        f"{where}.{field}: keys and values must be strings (quote 'true'), got {k!r}: {v!r}"
                    )
        for i, tol in enumerate(pool.get("tolerations", [])):
            if not isinstance(tol, dict) or not set(tol) <= _TOLERATION_KEYS:
                raise PodSpecError(
                    f"{where}.tolerations[{i}]: must be a mapping with keys among {', '.join(sorted(_TOLERATION_KEYS))}, got {tol!r}"
                )
        for field in ("cpu_guarantee_fraction", "mem_guarantee_fraction"):
            if field in pool:
                _check_fraction(f"{where}.{field}", pool[field])
        if kind == CPU_POOL and "resource" in pool:
            raise PodSpecError(f"{where}.resource: the '{CPU_POOL}' pool is for CPU-only courses and requests no GPU")
        pool = dict(pool)
        if kind != CPU_POOL:
            pool.setdefault("resource", default_resource(kind))
            if not _RESOURCE.match(pool["resource"]):
                raise PodSpecError(
                    f"{where}.resource: {pool['resource']!r} is not an extended resource name like nvidia.com/gpu"
                )
        checked[kind] = pool
    return checked


def default_resource(kind):
    """``mig-1g.10gb`` -> ``nvidia.com/mig-1g.10gb`` (the device plugin's mixed strategy); else ``nvidia.com/gpu``."""
    return f"nvidia.com/{kind}" if kind.startswith("mig-") else GPU_RESOURCE


def pool_for(course, pools):
    """``(kind, pool)`` for a course summary; ``kind`` is ``cpu`` for CPU-only courses."""
    gpu = course["sandbox"].get("gpu")
    kind = gpu["kind"] if gpu else CPU_POOL
    if kind not in pools:
        if gpu is None:
            return kind, {}
        raise PodSpecError(
            f"Course {course['id']} asks for GPU kind '{kind}', but this cluster has no pool for it "
            f"(known: {', '.join(sorted(k for k in pools if k != CPU_POOL)) or 'none'}). "
            "An administrator adds it to KubeSandboxSpawner.gpu_pools."
        )
    return kind, pools[kind]


def image_reference(image, registry=""):
    """``registry/repository:tag`` for a :class:`~aifhub.catalog.images.SandboxImage`."""
    ref = image.reference
    return f"{registry.rstrip('/')}/{ref}" if registry else ref


def resources(course, pool, cpu_fraction=0.25, mem_fraction=0.5, default_cpu=1.0, default_memory="2G"):
    """CPU, memory and GPU limits and (lower) guarantees, as KubeSpawner trait values."""
    sandbox = course["sandbox"]
    cpu = float(sandbox.get("cpu") or default_cpu)
    memory = parse_memory(sandbox.get("memory") or default_memory)
    cpu_fraction = pool.get("cpu_guarantee_fraction", cpu_fraction)
    mem_fraction = pool.get("mem_guarantee_fraction", mem_fraction)
    settings = {
        "cpu_limit": cpu,
        "cpu_guarantee": max(round(cpu * cpu_fraction, 3), 0.01),
        "mem_limit": memory,
        "mem_guarantee": int(memory * mem_fraction),
        "extra_resource_limits": {},
        "extra_resource_guarantees": {},
    }
    gpu = sandbox.get("gpu")
    if gpu:
        count = str(int(gpu.get("count", 1)))
        resource = pool.get("resource") or default_resource(gpu["kind"])
        settings["extra_resource_limits"] = {resource: count}
        settings["extra_resource_guarantees"] = {resource: count}  # extended resources: request equals limit
    return settings


def restricted_security():
    """Pod and container security contexts of the 'restricted' Pod Security Standard."""
    return {
        "uid": SANDBOX_UID,
        "gid": SANDBOX_GID,
        "fs_gid": SANDBOX_GID,
        "privileged": False,
        "allow_privilege_escalation": False,
        "automount_service_account_token": False,
        "pod_security_context": {
            "runAsNonRoot": True,
            "runAsUser": SANDBOX_UID,
            "runAsGroup": SANDBOX_GID,
            "fsGroup": SANDBOX_GID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "container_security_context": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def gpu_environment(course, pool):
    env = {"AIFHUB_COURSE": course["id"]}
    if course["sandbox"].get("gpu"):
        env["NVIDIA_DRIVER_CAPABILITIES"] = "compute,utility"
    else:
        # CUDA images set NVIDIA_VISIBLE_DEVICES=all: without this, a CPU-only pod on a GPU node sees every GPU.
        env["NVIDIA_VISIBLE_DEVICES"] = "void"
    env.update(pool.get("environment", {}))
    env["AIFHUB_COURSE"] = course["id"]
    return env


def grading_settings(course, claim, sub_path, mount_path):
    """What an instructor's sandbox adds for formgrader: their course's nbgrader directory from the grading
    volume (``claim``, at ``sub_path``) mounted at ``mount_path``, nbgrader pointed at it, and the label that
    lets the pod reach the gradebook's PostgreSQL."""
    return {
        "volumes": [{"name": "aifhub-course-grading", "persistentVolumeClaim": {"claimName": claim}}],
        # read-only: the service's workers run nbgrader in that directory; a link planted there would be
        # followed by them (the gradebook is PostgreSQL on Kubernetes, reached over the network)
        "volume_mounts": [
            {
                "name": "aifhub-course-grading",
                "mountPath": mount_path,
                "readOnly": True,
                "subPath": sub_path.replace("{course}", course["id"]),
            }
        ],
        "environment": {"AIFHUB_GRADING_DIR": mount_path},
        "extra_labels": {GRADEBOOK_LABEL: "true"},
    }


def labels(course, kind, component="sandbox"):
    return {COMPONENT_LABEL: component, COURSE_LABEL: course["id"], GPU_KIND_LABEL: kind}


def pod_settings(
    course,
    image,
    pools,
    *,
    pvc_name,
    registry="",
    cpu_fraction=0.25,
    mem_fraction=0.5,
    shm_fraction=0.25,
    home=HOME,
    deadline_grace=900,
):
    """KubeSpawner trait values for one course's sandbox.

    ``course`` is a course summary (as the service's admission returns it), ``image``
    its :class:`SandboxImage` (``None`` when the course names an unknown image),
    ``pools`` validated ``gpu_pools``. Dict values are meant to be merged over the
    spawner's configured baseline, list values appended to it, the rest replace it.
    """
    if image is None:
        raise PodSpecError(
            f"Course {course['id']} uses sandbox image '{course['sandbox']['image']}', which has no "
            "sandbox_images/<name>/image.yaml known to the hub."
        )
    if image.name in NOT_SANDBOXES:
        raise PodSpecError(f"Course {course['id']} names image '{image.name}', which is not a sandbox image.")
    kind, pool = pool_for(course, pools)
    settings = resources(course, pool, cpu_fraction, mem_fraction)
    shm = int(settings["mem_limit"] * shm_fraction)
    settings.update(restricted_security())
    settings.update(
        {
            "image": image_reference(image, registry),
            "node_selector": dict(pool.get("node_selector", {})),
            "tolerations": [dict(t) for t in pool.get("tolerations", [])],
            "priority_class_name": pool.get("priority_class", ""),
            "environment": gpu_environment(course, pool),
            "extra_labels": labels(course, kind),
            "working_dir": home,
            "storage_pvc_ensure": True,
            "volumes": [
                {"name": "aifhub-work", "persistentVolumeClaim": {"claimName": pvc_name}},
                {"name": "aifhub-shm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{max(shm // 2**20, 64)}Mi"}},
            ],
            "volume_mounts": [
                {"name": "aifhub-work", "mountPath": home},
                {"name": "aifhub-shm", "mountPath": "/dev/shm"},
            ],
            "extra_pod_config": {},
        }
    )
    max_session = course["sandbox"].get("max_session")
    if max_session:
        # a backstop only: the service stops sessions gracefully at max_session
        settings["extra_pod_config"]["activeDeadlineSeconds"] = parse_duration(max_session) + int(deadline_grace)
    return settings
