"""Grading Jobs: one batch/v1 Job autogrades one submission of a course, with no network."""

import hashlib
import re

from ..sandbox import podspec

GRADER = "grader"
EXCHANGE_PVC = "aifhub-exchange"
EXCHANGE_MOUNT = "/srv/nbgrader"


def safe_name(*parts, limit=63):
    """A DNS-1123 name from ``parts``, cut to ``limit`` with a hash suffix when too long."""
    raw = "-".join(parts)
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    if len(name) > limit or name != raw:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        name = f"{name[:limit - 9].rstrip('-')}-{digest}"
    return name


def grading_job(course, image, pools, assignment, student, *, registry="", namespace=None,
                deadline_seconds=1800, cpu="1", memory="2Gi", ttl_seconds=3600):
    """A Job that runs ``nbgrader autograde`` for one student's submission.

    No network at all: the pod carries the grader label that the
    ``aifhub-grading-no-network`` NetworkPolicy selects. Same image as the
    course's sandbox; the course's GPU when it has one (a notebook that needs
    CUDA is graded on CUDA).
    """
    if image is None:
        raise podspec.PodSpecError(f"Course {course['id']} uses an unknown sandbox image '{course['sandbox']['image']}'.")
    kind, pool = podspec.pool_for(course, pools)
    limits, requests = {"cpu": cpu, "memory": memory}, {"cpu": cpu, "memory": memory}
    gpu = course["sandbox"].get("gpu")
    if gpu:
        resource = pool.get("resource") or podspec.default_resource(gpu["kind"])
        limits[resource] = requests[resource] = str(int(gpu.get("count", 1)))
    security = podspec.restricted_security()
    labels = podspec.labels(course, kind, component=GRADER)
    labels["aifhub.io/assignment"] = safe_name(assignment)
    metadata = {
        "name": safe_name("aifhub-grade", course["id"], assignment, student),
        "labels": labels,
        "annotations": {"aifhub.io/student": student, "aifhub.io/assignment": assignment},
    }
    if namespace:
        metadata["namespace"] = namespace
    env = podspec.gpu_environment(course, pool)
    pod_spec = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": security["pod_security_context"],
        "priorityClassName": "aifhub-grading",
        "containers": [{
            "name": GRADER,
            "image": podspec.image_reference(image, registry),
            "command": ["nbgrader", "autograde", assignment, f"--student={student}", "--force",
                        f"--CourseDirectory.course_id={course['id']}"],
            "workingDir": f"{EXCHANGE_MOUNT}/courses/{course['id']}",
            "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
            "resources": {"limits": limits, "requests": requests},
            "securityContext": security["container_security_context"],
            "volumeMounts": [
                {"name": "course", "mountPath": f"{EXCHANGE_MOUNT}/courses/{course['id']}", "subPath": f"courses/{course['id']}"},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
        }],
        "volumes": [
            {"name": "course", "persistentVolumeClaim": {"claimName": EXCHANGE_PVC}},
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
            "activeDeadlineSeconds": int(deadline_seconds),
            "ttlSecondsAfterFinished": int(ttl_seconds),
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }
