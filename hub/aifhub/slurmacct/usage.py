"""Usage from Slurm's accounting: each ended job's GPU and CPU time, recorded once, keyed by its job id.

``sacct -X -P`` says, per job, its account, user, state, elapsed seconds and allocated TRES (``gres/gpu=N``,
``cpu=N``); aifhub's jobs carry ``aifhub course=<id> allocation=<id> session=<id>`` in their comment. The
import (the service's :mod:`aifhub.service.slurm_usage`, or ``aifhub slurm usage``) records each ended job in
``slurm_jobs`` (primary key: cluster and job id), so running it again, or from two machines, never counts a job
twice, and in the same transaction makes the charge of the job's session Slurm's figure (:func:`record`);
:func:`reconcile` sets each job's Slurm GPU time beside the ledger's charge of its session.
"""

import re
import subprocess

from sqlalchemy import select
from sqlalchemy.orm import Mapped, mapped_column

from ..hubside.slurm.jobspec import JOB_TAG
from ..ledger import metering
from ..ledger.models import SandboxSession
from ..state.base import Base, UTCDateTime, utcnow
from sqlalchemy import BigInteger, Integer, String

SACCT_FORMAT = "jobid,account,user,state,elapsedraw,alloctres,comment"
ENDED = (
    "COMPLETED",
    "CANCELLED",
    "FAILED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
)
TAG = re.compile(r"(course|allocation|session)=([^\s]+)")


class SlurmJob(Base):
    """One ended Slurm job's usage, as sacct recorded it (migration 0011)."""

    __tablename__ = "slurm_jobs"

    cluster: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    site_user: Mapped[str] = mapped_column(String(255))
    account: Mapped[str] = mapped_column(String(64))
    course_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    allocation_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    session_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(32))
    elapsed_s: Mapped[int] = mapped_column(BigInteger)
    gpu_count: Mapped[int] = mapped_column(Integer)
    gpu_ms: Mapped[int] = mapped_column(BigInteger)
    cpu_ms: Mapped[int] = mapped_column(BigInteger)
    recorded_at = mapped_column(UTCDateTime, default=utcnow)


def parse_sacct(text):
    """``sacct -X -n -P -o jobid,account,user,state,elapsedraw,alloctres,comment`` -> ended jobs as dicts."""
    jobs = []
    for line in text.splitlines():
        parts = line.split("|", 6)
        if len(parts) < 7 or not parts[0].isdigit():
            continue
        job_id, account, user, state, elapsed, tres, comment = parts
        state = state.split()[0] if state else ""
        if state not in ENDED:
            continue
        counts = dict(item.partition("=")[::2] for item in tres.split(",") if "=" in item)
        gpus = int(counts.get("gres/gpu", "0") or 0)
        cpus = int(counts.get("cpu", "0") or 0)
        seconds = int(elapsed or 0)
        tags = dict(TAG.findall(comment)) if comment.startswith("aifhub") else {}
        jobs.append(
            {
                "job_id": int(job_id),
                "account": account,
                "site_user": user,
                "state": state,
                "elapsed_s": seconds,
                "gpu_count": gpus,
                "gpu_ms": gpus * seconds * 1000,
                "cpu_ms": cpus * seconds * 1000,
                "course_id": tags.get("course"),
                "allocation_id": tags.get("allocation") if tags.get("allocation") != "-" else None,
                "session_id": int(tags["session"]) if tags.get("session", "").isdigit() else None,
            }
        )
    return jobs


def sacct(since, env=None):
    """Ended jobs of every user since ``since`` (sacct's --starttime, e.g. 2026-01-01)."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-a", "--starttime", since, "-o", SACCT_FORMAT],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if out.returncode:
        raise RuntimeError(f"sacct: {(out.stderr or out.stdout).strip()}")
    return parse_sacct(out.stdout)


def record(s, cluster, jobs):
    """Record the jobs not recorded yet, and make each aifhub session's charge Slurm's figure (a unit of work);
    returns the new ones, each with ``corrected_gpu_ms`` (the GPU ms the ledger's correcting event added, or
    None when no session of the ledger is the job's).

    Slurm's accounting is the authority on a Slurm job's usage: the service metered the session while it ran
    (quotas and budgets are enforced on that), and at settlement the session's charge becomes the job's GPU TRES
    time (``gres/gpu`` x elapsed seconds, the GPU kind's weight applied) through
    :func:`aifhub.ledger.metering.correct_to`. The record and the correction are one transaction, keyed by
    cluster and job id: a job corrects its session once, whoever runs this (the service or the CLI), however
    often. A job whose session is still active (the hub has not seen the end yet) waits for a later pass. The
    session must name the job (``pod`` = ``slurm-job/<id>``, set when the spawner saw it run): a job of another
    installation on the same cluster, whose comment names a session number of its own ledger, corrects nothing."""
    ids = [j["job_id"] for j in jobs]
    known = set(s.scalars(select(SlurmJob.job_id).where(SlurmJob.cluster == cluster, SlurmJob.job_id.in_(ids))))
    new = []
    for j in jobs:
        if j["job_id"] in known:
            continue
        session = None
        if j["session_id"] is not None:
            session = s.get(SandboxSession, j["session_id"])
            if session is not None and (
                session.course_id != j["course_id"] or (session.pod or "").removeprefix(JOB_TAG) != str(j["job_id"])
            ):
                session = None  # another installation's session of that number, or another job's
            if session is not None and session.state != "ended":
                continue  # settled later: the correction applies to a settled charge
        event = metering.correct_to(s, session, j["gpu_ms"], j["elapsed_s"] * 1000) if session is not None else None
        s.add(SlurmJob(cluster=cluster, **j))
        new.append(j | {"corrected_gpu_ms": None if session is None else (event.gpu_ms if event else 0)})
    return new


def reconcile(s, cluster):
    """Per recorded job of an aifhub session: (job id, session, Slurm's GPU ms, the ledger's charged GPU ms)."""
    rows = s.execute(
        select(SlurmJob.job_id, SlurmJob.session_id, SlurmJob.gpu_ms, SandboxSession.charged_gpu_ms)
        .outerjoin(
            SandboxSession,
            (SandboxSession.id == SlurmJob.session_id) & (SandboxSession.course_id == SlurmJob.course_id),
        )
        .where(SlurmJob.cluster == cluster)
        .order_by(SlurmJob.job_id)
    )
    return [tuple(r) for r in rows]
