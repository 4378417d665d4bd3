"""Slurm's association tree kept in step with the ledger by the service itself (sandboxes on Slurm only).

The same plan as ``aifhub slurm sync`` (:mod:`aifhub.slurmacct.tree`: the ledger's facts -> the tree ->
the ``sacctmgr`` commands that differ), run by the service:

* right after a learner's admission, before the spawner submits the job, whenever the learner's association
  with the course's account is not known to be in Slurm yet (a new learner gets their uid, hence their site
  account, at their first admission: without this, Slurm refuses their first job with "Invalid account");
* when something the tree is made of changes: the catalog (courses, rosters, instructors, budgets, quotas),
  enrolments, allocations (:meth:`changed` wakes the loop; the loop also compares the desired tree with the
  last one applied every ``interval`` seconds, so a change made by the CLI is seen too).

Slurm is read and changed with ``sacctmgr`` in a thread (never on the event loop); syncs take turns (one lock).
A failed sync is logged and tried again on the next change or tick; an admission is never refused for it
(Slurm itself then refuses the job, in its words). Settings: ``cluster`` (or ``$AIFHUB_SLURM_CLUSTER``),
the site account mapping of ``--slurm-config`` (``site_account_template``, ``site_accounts``, as the
spawner's), and ``SLURM_CONF`` in the service's environment.
"""

import asyncio
import logging
import os

from traitlets import Bool, Dict, Float, Unicode, default
from traitlets.config import LoggingConfigurable

from ..slurmacct import sync as slurm_sync
from ..slurmacct import tree as slurm_tree

log = logging.getLogger(__name__)


# -- units of work (threads) --------------------------------------------------


def desired(s, courses, template, accounts):
    """The tree the ledger asks for now (session ``s``; ``courses``: the catalog's Course objects)."""
    allocations, enrolled, uids = slurm_sync.ledger_facts(s)
    return slurm_tree.desired(
        courses,
        allocations,
        slurm_sync.members(courses, enrolled),
        slurm_sync.site_resolver(uids, template, accounts),
    )


def _signature(tree):
    return (
        tuple(sorted((a.name, a.parent, a.gpu_minutes, a.closed) for a in tree.accounts.values())),
        tuple(sorted(tree.users.items())),
    )


def apply_tree(tree, cluster, env=None):
    """Read Slurm's tree, run the commands that make it ``tree``; the lines run (blocking: call in a thread)."""
    accounts, users = slurm_sync.current(cluster, env)
    return slurm_sync.apply(slurm_tree.plan(tree, accounts, users, cluster), env)


# -- the part -----------------------------------------------------------------


class SlurmAccounts(LoggingConfigurable):
    """Keeps Slurm's associations matching the ledger while the service runs (docs/slurm.md)."""

    cluster = Unicode(
        help="Slurm's cluster name (slurm.conf ClusterName) whose associations the service keeps in step; "
        "default: $AIFHUB_SLURM_CLUSTER. Empty: the service changes nothing in Slurm."
    ).tag(config=True)
    keep_in_step = Bool(
        True,
        help="Whether the service changes Slurm's associations to match the ledger. False: the site manages them "
        "elsewhere (its own account tooling, or `aifhub slurm sync` run by an operator), and a learner without "
        "an association is refused by Slurm in its words.",
    ).tag(config=True)
    site_account_template = Unicode(
        "",
        help="Unix account of a hub user on the cluster, e.g. '{username}' (as SlurmSpawner.site_account_template); "
        "empty: the account of the learner's per-learner uid.",
    ).tag(config=True)
    site_accounts = Dict(
        help="Hub user -> Unix account on the cluster, for users listed here (as SlurmSpawner.site_accounts)."
    ).tag(config=True)
    interval = Float(
        60.0,
        help="Seconds between comparisons of the ledger's tree with the last one applied (a change the service "
        "did not see, such as the CLI's allocation top-up, is applied within this time). Changes the service "
        "makes itself are applied at once.",
    ).tag(config=True)
    full_interval = Float(
        3600.0,
        help="Seconds between syncs that read Slurm's tree even when the ledger's did not change (an association "
        "removed in Slurm by hand comes back).",
    ).tag(config=True)

    @default("cluster")
    def _cluster_default(self):
        return os.environ.get("AIFHUB_SLURM_CLUSTER", "")

    def __init__(self, db, courses, **kwargs):
        super().__init__(**kwargs)
        self.db = db
        self.courses = courses  # the catalog watch
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._applied = None  # the signature of the last tree applied

    async def _desired(self):
        courses = list(self.courses.catalog.courses.values())
        return await self.db.run(desired, courses, self.site_account_template, dict(self.site_accounts))

    async def sync(self, why, force=False):
        """Make Slurm match the ledger (unless the tree is the one applied last, without ``force``); the lines
        run, or None when nothing was asked of Slurm. Raises SlurmCommandError or OSError."""
        if not self.cluster or not self.keep_in_step:
            return None
        async with self._lock:
            tree = await self._desired()
            signature = _signature(tree)
            if signature == self._applied and not force:
                return None
            lines = await asyncio.to_thread(apply_tree, tree, self.cluster)
            self._applied = signature
        for line in lines:
            log.info("Slurm (%s): %s", why, line)
        log.info("Slurm's associations match the ledger (%s: %d change(s))", why, len(lines))
        return lines

    async def admitted(self, user, course):
        """After ``user``'s admission to ``course``, before their job is submitted: a first admission gives the
        learner their uid, hence their site account, and their association with the course's account is made
        now (one read of the ledger when nothing changed). Never raises: Slurm then says no in its words."""
        if not self.cluster or not self.keep_in_step or not course.allocation:
            return
        try:
            await self.sync(f"{user}'s admission to {course.id}")
        except (slurm_sync.SlurmCommandError, OSError) as exc:
            log.warning("Could not bring Slurm's associations in step for %s in %s: %s", user, course.id, exc)

    def changed(self):
        """Something the tree is made of changed (catalog, enrolment, allocation): sync soon."""
        self._wake.set()

    async def run(self):
        """Sync at start, on :meth:`changed`, every ``interval`` when the ledger's tree differs, and every
        ``full_interval`` regardless."""
        if not self.keep_in_step:
            log.info("Slurm's associations are left to the site (SlurmAccounts.keep_in_step is off)")
            return
        if not self.cluster:
            log.warning("Sandboxes on Slurm, but no cluster named ($AIFHUB_SLURM_CLUSTER): associations left alone")
            return
        loop = asyncio.get_running_loop()
        last_full = None
        while True:
            force = last_full is None or loop.time() - last_full >= self.full_interval
            self._wake.clear()  # a change told during the sync wakes the next one
            try:
                await self.sync("start" if last_full is None else "changes", force=force)
                if force:
                    last_full = loop.time()
            except (slurm_sync.SlurmCommandError, OSError) as exc:
                log.warning("Slurm's associations not in step with the ledger: %s", exc)
            except Exception:
                log.exception("Slurm association sync failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except asyncio.TimeoutError:
                pass
