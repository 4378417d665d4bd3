"""Pure functions: a course's sandbox as a Slurm job, and Slurm's answers in words for learners.

No I/O here: the spawner (spawner.py) asks Slurm, these only translate.
"""

import math
import re
import shlex
import time

# what the ledger's session records as where it runs (its ``pod``): ``slurm-job/<job id>``; the job's accounting
# settles that session's charge (aifhub.slurmacct.usage)
JOB_TAG = "slurm-job/"

ACCOUNT = re.compile(r"[^a-z0-9_-]")

# Slurm's job states that end a job: a spawn whose job reaches one before its server answered fails with it
ENDED = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "TIMEOUT",
    "REVOKED",
    "SPECIAL_EXIT",
}

_REASONS = [  # (prefix or name of Slurm's pending reason, words for the learner)
    ("Priority", "queued behind other jobs that came first or have priority"),
    ("Resources", "waiting for free resources: every node that fits this course is busy"),
    ("ReqNodeNotAvail", "waiting for the course's reservation or nodes to become available"),
    ("Reservation", "waiting for the course's reservation to start"),
    ("AssocGrpGRESMinutes", "the course's GPU budget is used up"),
    ("AssocGrpGRESRunMinutes", "the course's GPU budget is taken by the sandboxes running now"),
    ("AssocGrpBillingMinutes", "the course's budget is used up"),
    ("AssocGrpCPUMinutesLimit", "the course's CPU budget is used up"),
    ("AssocGrp", "the course (or its allocation) is at its limit on the cluster"),
    ("AssocMax", "you are at your own limit in this course on the cluster"),
    ("QOSGrp", "the course's quality of service is at its limit"),
    ("QOSMax", "you are at your limit in the course's quality of service"),
    ("PartitionDown", "the course's partition is down"),
    ("PartitionInactive", "the course's partition is not accepting jobs"),
    ("PartitionNodeLimit", "the course asks for more than its partition allows"),
    ("PartitionTimeLimit", "the course's session is longer than its partition allows"),
    ("BeginTime", "waiting for its start time"),
    ("JobHeldAdmin", "held by an administrator"),
    ("JobHeldUser", "held"),
    ("InvalidAccount", "the course's account is not valid on the cluster"),
    ("InvalidQOS", "the course's quality of service is not valid on the cluster"),
    ("Dependency", "waiting for another job"),
    ("None", "submitted; the scheduler has not looked at it yet"),
]


def slurm_account(name):
    """A Slurm account name for an allocation or course id (Slurm keeps them lower case)."""
    return ACCOUNT.sub("-", str(name).lower())[:64]


def pending_words(reason):
    """Slurm's pending reason (``Priority``, ``AssocGrpGRESMinutes``...) in words, with the reason itself."""
    reason = reason or "None"
    for key, words in _REASONS:
        if reason == key or reason.startswith(key):
            return words if reason == "None" else f"{words} (Slurm: {reason})"
    return f"waiting (Slurm: {reason})"


def start_estimate(start_time, now=None):
    """Slurm's expected start (epoch seconds; 0 or in the past: none yet) as words, or ''."""
    now = time.time() if now is None else now
    if not start_time or start_time <= now:
        return ""
    wait = start_time - now
    if wait < 90:
        return "expected to start within about a minute"
    if wait < 3 * 3600:
        return f"expected to start in about {round(wait / 60)} min"
    return "expected to start at " + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(start_time))


def ended_words(job):
    """Why a job ended (Slurm's state and reason)."""
    state = job_state(job)
    reason = job.get("state_reason") or ""
    words = {
        "CANCELLED": "was cancelled",
        "FAILED": "failed",
        "COMPLETED": "ended before its server answered",
        "TIMEOUT": "reached its time limit",
        "NODE_FAIL": "lost its node",
        "OUT_OF_MEMORY": "ran out of memory",
        "BOOT_FAIL": "could not boot its node",
        "PREEMPTED": "was preempted by a job with priority",
        "DEADLINE": "missed its deadline",
    }.get(state, f"ended ({state})")
    return words + (f" (Slurm: {reason})" if reason and reason != "None" else "")


def job_state(job):
    state = (job or {}).get("job_state") or ""
    if isinstance(state, list):  # newer slurmrestd versions answer a list of flags
        state = state[0] if state else ""
    return str(state).upper()


def job_properties(course, account, site_user, env, cwd, settings, session_id=None):
    """slurmrestd v0.0.38 job properties for ``course`` (its summary, as the admission gives it) charged to
    ``account``, with ``env``; ``settings``: the spawner's defaults (partition, gpu_types, default_time_min, ...)."""
    sandbox = course["sandbox"]
    placement = {k: v for k, v in (course.get("slurm") or {}).items() if v}
    job = {
        "name": f"aifhub-{course['id']}",
        "account": account,
        "partition": placement.get("partition") or settings.get("partition") or None,
        "qos": placement.get("qos"),
        "reservation": placement.get("reservation"),
        "constraints": placement.get("constraint"),
        "cpus_per_task": max(1, math.ceil(sandbox.get("cpu") or 1)),
        "memory_per_node": memory_mb(sandbox.get("memory")) or settings.get("default_memory_mb"),
        "time_limit": time_limit_min(sandbox.get("max_session"), settings.get("default_time_min", 240)),
        "comment": f"aifhub course={course['id']} allocation={course.get('allocation') or '-'}"
        + (f" session={int(session_id)}" if session_id is not None else ""),
        "current_working_directory": cwd,
        "environment": dict(env),
        "standard_output": "/dev/null",
        "standard_error": "/dev/null",
    }
    gpu = sandbox.get("gpu")
    if gpu:
        kind = (settings.get("gpu_types") or {}).get(gpu["kind"], gpu["kind"] if gpu["kind"] != "gpu" else "")
        job["gres"] = f"gpu:{kind}:{gpu['count']}" if kind else f"gpu:{gpu['count']}"
    return {k: v for k, v in job.items() if v not in (None, "")}


def memory_mb(text):
    """``16G`` -> MB for Slurm (decimal units; ``Gi`` binary), or None."""
    if not text:
        return None
    from ...catalog.model import parse_memory

    return max(1, math.ceil(parse_memory(text) / 2**20))


def time_limit_min(max_session, default_min):
    """``4h`` -> 240 (minutes: sbatch --time); the default when the course gives none."""
    if not max_session:
        return int(default_min)
    from ...catalog.model import parse_duration

    return max(1, math.ceil(parse_duration(max_session) / 60))


def batch_script(python, cmd):
    """The job's script: the job side (aifhub.sandboxside.slurm_job) prepares the work folder as the learner,
    reports its address to the hub, then runs the single-user server (``cmd``)."""
    args = shlex.join([python, "-m", "aifhub.sandboxside.slurm_job", "--", *cmd])
    return f"#!/bin/sh\nexec {args}\n"
