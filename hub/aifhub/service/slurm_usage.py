"""Slurm's accounting settles the ledger's charges of Slurm sandboxes, inside the service (sandboxes on Slurm only).

Every ``interval`` seconds the service reads ended jobs from ``sacct`` (in a thread: never on the event loop) and
records those not recorded yet with :func:`aifhub.slurmacct.usage.record`: one transaction per pass writes each
job's row (keyed by cluster and job id: once, across restarts and beside ``aifhub slurm usage``) and the
correcting event that makes its session's charge the job's GPU TRES time (:func:`aifhub.ledger.metering.correct_to`).
While a job runs, the service meters its session as any other (quotas and budgets stop it on that); once it has
ended and Slurm has accounted it, Slurm's figure is the ledger's (docs/slurm.md).
"""

import asyncio
import logging
import os

from traitlets import Float, Unicode, default
from traitlets.config import LoggingConfigurable

from ..slurmacct import usage

log = logging.getLogger(__name__)


class SlurmUsage(LoggingConfigurable):
    """Ended Slurm jobs' usage from sacct into the ledger, once per job id (docs/slurm.md)."""

    cluster = Unicode(
        help="Slurm's cluster name (slurm.conf ClusterName) of the jobs' records; default: $AIFHUB_SLURM_CLUSTER. "
        "Empty: the service reads nothing from sacct."
    ).tag(config=True)
    interval = Float(30.0, help="Seconds between reads of Slurm's accounting (sacct) for ended jobs.").tag(config=True)
    since = Unicode(
        "now-7days",
        help="sacct's --starttime of each read: jobs that started since (a job ended while the service was down "
        "longer than this is left to `aifhub slurm usage --since`).",
    ).tag(config=True)

    @default("cluster")
    def _cluster_default(self):
        return os.environ.get("AIFHUB_SLURM_CLUSTER", "")

    def __init__(self, db, **kwargs):
        super().__init__(**kwargs)
        self.db = db

    async def settle(self):
        """One pass: the jobs recorded now (each with ``corrected_gpu_ms``)."""
        jobs = await asyncio.to_thread(usage.sacct, self.since)
        new = await self.db.run(usage.record, self.cluster, jobs)
        for j in new:
            log.info(
                "Slurm job %s (%s, %s, %s): %d GPU ms by sacct; session %s corrected by %s GPU ms",
                j["job_id"],
                j["account"],
                j["site_user"],
                j["state"],
                j["gpu_ms"],
                j["session_id"] if j["corrected_gpu_ms"] is not None else "-",
                j["corrected_gpu_ms"] if j["corrected_gpu_ms"] is not None else "-",
            )
        return new

    async def run(self):
        if not self.cluster:
            return  # SlurmAccounts says so already
        while True:
            try:
                await self.settle()
            except (RuntimeError, OSError) as exc:
                log.warning("Slurm's accounting not read: %s", exc)
            except Exception:
                log.exception("Settling Slurm jobs failed")
            await asyncio.sleep(self.interval)
