"""User placeholders for a course's scheduled sessions on Kubernetes: room kept, images pulled, ahead of time.

Before a session (``course.yaml`` ``sessions: [{start, end, expected}]``) the aifhub service keeps a
ReplicaSet of placeholder pods for the course: each asks for exactly what one learner's sandbox asks for
(its GPU or MIG slice, CPU and memory guarantees), on the course's GPU pool (node selector, tolerations),
with the course's own image, so the nodes that will run the learners have pulled it. They run at a priority
below every sandbox (``aifhub-placeholder``, -10, never preempting anyone): a learner's pod that finds no
room makes the scheduler evict one (preemption), and takes its place at once. The chart's one
user-placeholder StatefulSet cannot do this per course and per GPU pool (it uses the global singleuser
settings and the pause image).

:func:`placeholder_replicaset` builds the object; :func:`wanted` says how many a course needs now.
"""

from datetime import timedelta

from . import podspec
from .grading_job import safe_name

PLACEHOLDER = "placeholder"  # the aifhub.io/component label of placeholder pods
PRIORITY_CLASS = "aifhub-placeholder"
PRIORITY = -10
# a pod that only waits, in the sandbox image (every aifhub image has Python): no port, no files, no network
PAUSE = ["python", "-c", "import signal; signal.pause()"]


def replicaset_name(course_id):
    return safe_name("aifhub-placeholder", course_id)


def placeholder_replicaset(
    cluster, course, image, replicas, *, cpu_fraction=0.25, mem_fraction=0.5, scheduler_name=None
):
    """The ReplicaSet of ``replicas`` placeholders for ``course`` (a course summary), as the sandboxes' pool
    and resources make them (``cluster``: a :class:`aifhub.kube.settings.Cluster`, its namespace, registry and
    GPU pools; ``image``: the course's :class:`SandboxImage`)."""
    if image is None:
        raise podspec.PodSpecError(
            f"Course {course['id']} uses an unknown sandbox image '{course['sandbox']['image']}'."
        )
    kind, pool = podspec.pool_for(course, cluster.pools)
    r = podspec.resources(course, pool, cpu_fraction, mem_fraction)
    held = {"cpu": str(r["cpu_guarantee"]), "memory": str(r["mem_guarantee"]), **r["extra_resource_guarantees"]}
    security = podspec.restricted_security()
    labels = podspec.labels(course, kind, component=PLACEHOLDER)
    spec = {
        "priorityClassName": PRIORITY_CLASS,
        "terminationGracePeriodSeconds": 0,  # evicted for a learner: gone at once
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": security["pod_security_context"],
        "containers": [
            {
                "name": PLACEHOLDER,
                "image": podspec.image_reference(image, cluster.registry),
                "command": PAUSE,
                "resources": {"requests": held, "limits": dict(held)},
                "securityContext": security["container_security_context"] | {"readOnlyRootFilesystem": True},
            }
        ],
    }
    if pool.get("node_selector"):
        spec["nodeSelector"] = dict(pool["node_selector"])
    if pool.get("tolerations"):
        spec["tolerations"] = [dict(t) for t in pool["tolerations"]]
    if scheduler_name:
        spec["schedulerName"] = scheduler_name
    metadata = {"name": replicaset_name(course["id"]), "labels": dict(labels)}
    if cluster.namespace:
        metadata["namespace"] = cluster.namespace
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": metadata,
        "spec": {
            "replicas": int(replicas),
            "selector": {"matchLabels": {podspec.COMPONENT_LABEL: PLACEHOLDER, podspec.COURSE_LABEL: course["id"]}},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def wanted(sessions, now, lead_s, keep_s, arrived=0):
    """Placeholders a course wants at ``now``: the learners its open session windows expect (a window opens
    ``lead_s`` before a session's start and closes ``keep_s`` after it, at most at its end), less the
    ``arrived`` learners' sandboxes of the course that run already."""
    expected = sum(
        s.expected
        for s in sessions
        if s.start - timedelta(seconds=lead_s) <= now < min(s.end, s.start + timedelta(seconds=keep_s))
    )
    return max(0, expected - arrived)
