"""Grading Jobs through the Kubernetes API (kubernetes_asyncio, KubeSpawner's client): create one,
follow it to its end, say why it failed, delete it. Used by the grading worker (:mod:`.kubejobs`)
and by the service, which removes the Jobs of a submission whose grading it stopped."""

import asyncio
import time

IMAGE_ERRORS = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
}
JOB_LABEL = "aifhub.io/grading-job"


class JobFailed(RuntimeError):
    """A grading Job that did not run its notebook to the end; the message says why, in nbgrader's terms."""


async def load_kube_config(kube_config):
    """A kubeconfig file when given, else the pod's own service account (in the cluster)."""
    from kubernetes_asyncio import config

    if kube_config:
        await config.load_kube_config(config_file=kube_config)
    else:
        config.load_incluster_config()


def pod_problem(pod):
    """Why a pod cannot run (or ran and was killed), from its status; None while it is fine."""
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in IMAGE_ERRORS:
            return "image", f"{waiting['reason']}: {waiting.get('message', '')}".strip()
        terminated = state.get("terminated") or {}
        if terminated.get("reason") == "OOMKilled":
            return "oom", "OOMKilled: the grading pod was killed at its memory limit"
    for cond in status.get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            return "unschedulable", cond.get("message") or "no node can run it"
    return None


async def run_job(manifest, namespace, kube_config, start_timeout, run_timeout, poll=1.0):
    """Create the Job, wait for its end; returns ("succeeded" | "failed", why). Deletes the Job."""
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

    await load_kube_config(kube_config)
    name = manifest["metadata"]["name"]
    async with client.ApiClient() as api:
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        try:
            await batch.create_namespaced_job(namespace, manifest)
        except ApiException as exc:
            raise JobFailed(f"the grading Job could not be created ({exc.status} {exc.reason}: {exc.body})")
        created = time.monotonic()
        started = None
        try:
            while True:
                job = api.sanitize_for_serialization(await batch.read_namespaced_job_status(name, namespace))
                status = job.get("status") or {}
                if status.get("succeeded"):
                    return "succeeded", None
                pods = (
                    api.sanitize_for_serialization(
                        await core.list_namespaced_pod(namespace, label_selector=f"job-name={name}")
                    ).get("items")
                    or []
                )
                problem = next((p for p in map(pod_problem, pods) if p), None)
                if problem and problem[0] == "oom":
                    return "failed", problem[1]
                if problem and problem[0] == "image":
                    return "failed", f"the grading pod cannot start: {problem[1]}"
                conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
                if "Failed" in conditions or status.get("failed"):
                    reason = (conditions.get("Failed") or {}).get("reason", "")
                    if reason == "DeadlineExceeded":
                        return "failed", "Timeout waiting for the grading pod: it ran past its deadline"
                    return "failed", f"the grading pod failed ({reason or 'no reason given'})"
                running = any((p.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed") for p in pods)
                if running and started is None:
                    started = time.monotonic()
                now = time.monotonic()
                if started is None and now - created > start_timeout:
                    why = problem[1] if problem else "it was still waiting for a node"
                    return "failed", f"the grading pod did not start within {start_timeout} s: {why}"
                if started is not None and now - started > run_timeout:
                    return "failed", f"Timeout waiting for the grading pod: it ran past {run_timeout} s"
                await asyncio.sleep(poll)
        finally:
            try:
                await batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
            except ApiException:
                pass


async def delete_jobs(namespace, kube_config, job_id):
    """Delete the Jobs (and their pods) of grading job ``job_id``; returns how many there were."""
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

    await load_kube_config(kube_config)
    async with client.ApiClient() as api:
        batch = client.BatchV1Api(api)
        jobs = await batch.list_namespaced_job(namespace, label_selector=f"{JOB_LABEL}={job_id}")
        for job in jobs.items:
            try:
                await batch.delete_namespaced_job(job.metadata.name, namespace, propagation_policy="Background")
            except ApiException as exc:
                if exc.status != 404:
                    raise
        return len(jobs.items)
