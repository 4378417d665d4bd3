"""Grading Jobs: one batch/v1 Job runs one notebook of one submission, with no network.

The service's grading worker runs the trusted steps of ``nbgrader autograde`` (it holds the
gradebook); only the execution of a learner's notebook goes into a Job (see
:mod:`aifhub.grading.runners.execute`). The Job's pod mounts that job's folder of the grading volume and
nothing else: no course directory, no gradebook, no other submission, no service account token,
no service links. The ``aifhub-grading-no-network`` NetworkPolicy selects it by its label.
"""

import hashlib
import re
from dataclasses import dataclass

from . import podspec
from .settings import Cluster

GRADER = "grader"
# The grading volume (ReadWriteMany), mounted in the hub pod at GRADING_MOUNT: the courses' nbgrader
# directories in courses/ (instructors' sandboxes mount their course's, for formgrader), and a folder per
# graded notebook in jobs/ (its grading pod mounts that folder only, at JOB_MOUNT).
GRADING_PVC = "aifhub-grading"
GRADING_MOUNT = "/srv/aifhub/grading"
COURSES_SUBDIR, JOBS_SUBDIR = "courses", "jobs"
JOB_MOUNT = "/grading"


def safe_name(*parts, limit=63):
    """A DNS-1123 name from ``parts``, cut to ``limit`` with a hash suffix when too long."""
    raw = "-".join(parts)
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    if len(name) > limit or name != raw:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        name = f"{name[: limit - 9].rstrip('-')}-{digest}"
    return name


def label_value(value, limit=63):
    """A label value (alphanumerics, '-', '_', '.'; at most 63), hashed when ``value`` does not fit."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-._")
    if clean != value or len(clean) > limit:
        clean = f"{clean[: limit - 9].rstrip('-._')}-{hashlib.sha256(value.encode()).hexdigest()[:8]}".lstrip("-._")
    return clean


@dataclass(frozen=True)
class JobSettings(Cluster):
    """What the grading Jobs of one deployment share (the cluster's settings, and each pod's limits): the
    grading volume's claim, a pod's CPU and memory, the Job's deadline and how long it is kept after."""

    claim: str = GRADING_PVC
    cpu: str = "1"
    memory: str = "2Gi"
    deadline_seconds: int = 1800
    ttl_seconds: int = 600


def grading_job(settings, course, image, assignment, student, *, name=None, sub_path=None, job_id=None):
    """The Job that runs one notebook of ``student``'s submission of ``assignment`` (``settings``: a
    :class:`JobSettings`; ``course`` a course summary, ``image`` its :class:`SandboxImage`).

    ``sub_path`` is the job's folder on the grading volume (``settings.claim``); the pod sees it at
    ``/grading``. Same image as the course's sandbox, the course's GPU pool and GPU request when it
    has one (a notebook that needs CUDA is graded on CUDA), CPU and memory limits, and a deadline
    that covers the wait for a node and the whole-notebook timeout.
    """
    if image is None:
        raise podspec.PodSpecError(
            f"Course {course['id']} uses an unknown sandbox image '{course['sandbox']['image']}'."
        )
    kind, pool = podspec.pool_for(course, settings.pools)
    cpu, memory = settings.cpu, settings.memory
    limits, requests = {"cpu": cpu, "memory": memory}, {"cpu": cpu, "memory": memory}
    gpu = course["sandbox"].get("gpu")
    if gpu:
        resource = pool.get("resource") or podspec.default_resource(gpu["kind"])
        limits[resource] = requests[resource] = str(int(gpu.get("count", 1)))
    security = podspec.restricted_security()
    labels = podspec.labels(course, kind, component=GRADER)
    labels["aifhub.io/assignment"] = label_value(assignment)
    if job_id is not None:
        labels["aifhub.io/grading-job"] = str(job_id)
    name = name or safe_name("aifhub-grade", course["id"], assignment, student)
    metadata = {
        "name": name,
        "labels": labels,
        "annotations": {"aifhub.io/student": student, "aifhub.io/assignment": assignment},
    }
    if settings.namespace:
        metadata["namespace"] = settings.namespace
    threads = str(max(1, int(float(cpu)))) if re.fullmatch(r"[0-9.]+", cpu) else "1"
    env = podspec.gpu_environment(course, pool) | {
        # a read-only image: everything the kernel writes goes to /tmp (an emptyDir) or the job folder
        "HOME": "/tmp/home",
        "IPYTHONDIR": "/tmp/home/.ipython",
        "JUPYTER_RUNTIME_DIR": "/tmp/runtime",
        "MPLBACKEND": "Agg",
        "NBGRADER_EXECUTION": "autograde",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    pod_spec = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": security["pod_security_context"],
        "priorityClassName": "aifhub-grading",
        "containers": [
            {
                "name": GRADER,
                "image": podspec.image_reference(image, settings.registry),
                "command": ["python", "-m", "aifhub.grading.runners.execute", JOB_MOUNT],
                "workingDir": f"{JOB_MOUNT}/work",
                "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
                "resources": {"limits": limits, "requests": requests},
                "securityContext": security["container_security_context"] | {"readOnlyRootFilesystem": True},
                "volumeMounts": [
                    {"name": "job", "mountPath": JOB_MOUNT, "subPath": sub_path or f"{name}"},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            }
        ],
        "volumes": [
            {"name": "job", "persistentVolumeClaim": {"claimName": settings.claim}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    }
    if pool.get("node_selector"):
        pod_spec["nodeSelector"] = dict(pool["node_selector"])
    if pool.get("tolerations"):
        pod_spec["tolerations"] = [dict(t) for t in pool["tolerations"]]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": int(settings.deadline_seconds),
            "ttlSecondsAfterFinished": int(settings.ttl_seconds),
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }
