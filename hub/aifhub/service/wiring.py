"""The service's composition root: every part of the aifhub service is made and connected here, and only here.

:func:`wire` takes the service's settings (an :class:`~aifhub.service.app.AifhubService`, whose config reaches
every configurable part as its parent) and the hub's client, and returns the parts as :class:`Service`. The
service process (:meth:`AifhubService.run`) and the tests' in-process service (``tests/servicekit.py``) both
call it, so a test runs the parts the service runs, connected the same way.

Who is given what (read top to bottom: a part is made after those it needs):

* the catalog watch; with sandboxes on Slurm, :class:`~.slurm_accounts.SlurmAccounts` (Slurm's associations
  kept in step: membership tells it of enrolments, admission of first admissions, the core of catalog and
  allocation changes), and :class:`~.slurm_usage.SlurmUsage` (sacct's figures settle ended jobs' charges);
  membership (with the hub), the GPU waitlist (local pool only);
* :class:`~.service_servers.ServiceServers`: what the service itself runs and the ledger charges like the
  hub's servers (GPU grading jobs, warm sandboxes, placeholder pods). Admission, the warm pool and the
  placeholders write it; the metering loop, given the same board, is its only reader;
* the disk watch (local sandboxes only: their homes are on this machine);
* admission (membership, waitlist, disk watch, the board);
* the metering loop (the hub, the board, the GPU pool for the idle rule) and the :class:`~.core.ServiceCore`
  over them, which handlers reach;
* :class:`~aifhub.kube.settings.KubeSettings`, one for grading Jobs and placeholders;
* grading (the core, the Kubernetes settings, admission as its queue's GPU broker: the facade makes its parts,
  :mod:`aifhub.grading.manager`); the LTI tool (``--auth lti13`` only);
* the warm pool (an isolated service only: warm sandboxes run under learners' uids) and, when the cluster
  places GPUs and grading runs there, the placeholders instead.

The one link made after both ends exist: admission takes warm sandboxes from the pool, and the pool admits its
own sessions through admission (its waitlist and GPU pool), so ``admission.warm`` is set here once the pool is
made. Nothing else sets one part onto another.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

from ..grading.manager import GradingManager
from ..kube.settings import KubeSettings
from ..state.db import Database
from .admission import GRADER, Admission
from .catalog_watch import CatalogWatch
from .core import ServiceCore
from . import idle
from .disk_watch import DiskWatch
from ..gpus.dcgm import Exporter
from ..gpus.nvml import reader_from
from .gpu_use import GpuUse
from .gpu_pool import gpu_inventory
from .membership import Membership
from .metering_loop import MeteringLoop
from .placeholders import Placeholders
from .service_servers import ServiceServers
from .slurm_accounts import SlurmAccounts
from .slurm_usage import SlurmUsage
from .waitlist import Waitlist
from .warm_pool import WARM_USER, WarmPool

log = logging.getLogger(__name__)


@dataclass
class Service:
    """The wired parts of one service (None: a part this service does not have)."""

    db: object
    hub: object
    inventory: list | None  # the local GPU pool; None when the cluster places GPUs
    core: ServiceCore
    kube: KubeSettings
    grading: GradingManager | None = None
    lti: object = None
    warm: WarmPool | None = None
    disk: DiskWatch | None = None
    placeholders: Placeholders | None = None
    slurm: SlurmAccounts | None = None
    slurm_usage: SlurmUsage | None = None

    async def close(self):
        """Stop what the parts started (warm sandboxes, grading workers, the LTI tool) and close the database."""
        try:
            if self.warm is not None:
                await self.warm.stop_all()
            if self.grading is not None:
                await self.grading.stop()
            if self.lti is not None:
                await self.lti.stop()
        finally:
            self.db.close()


def wire(app, hub, *, db=None, grading=True, lti=True):
    """Make the service's parts from ``app``'s settings, with ``hub`` (the hub's REST client).

    ``db`` defaults to ``app.db_url``'s; ``grading`` and ``lti`` False leave those parts out (handler tests
    that need no grading). Raises ValueError when settings contradict each other (the database is closed
    then)."""
    state = Path(app.state_dir)
    kinds = app.kinds()  # ValueError saying what is wrong with gpu_kinds
    reader = reader_from(app.nvml_recording)  # the NVML adapter: the driver, or a recording
    inventory = gpu_inventory(app.gpus, app.gpu_kind, kinds, reader)
    db = db if db is not None else Database(app.db_url)
    try:
        return _wire(app, hub, db, state, inventory, grading, lti, kinds, reader)
    except BaseException:
        db.close()
        raise


def _wire(app, hub, db, state, inventory, with_grading, with_lti, kinds=None, reader=None):
    default_session_s = int(app.default_session_hours * 3600)
    courses = CatalogWatch(app.course_dirs(), app.images_dir, protect_sources=app.isolated)
    slurm = SlurmAccounts(db, courses, parent=app) if app.sandboxes == "slurm" else None
    membership = Membership(db, courses, hub, on_change=slurm.changed if slurm is not None else None)
    waitlist = (
        Waitlist(db, courses, inventory, default_session_s, app.waitlist_hold)
        if app.waitlist and inventory is not None
        else None
    )
    servers = ServiceServers()
    disk = (
        DiskWatch(db, courses, hub, state, (GRADER, WARM_USER), parent=app) if inventory is not None else None
    )  # local sandboxes: their homes are on this machine's state filesystem
    admission = Admission(
        db,
        courses,
        membership,
        inventory,
        app.first_uid,
        default_session_s,
        servers,
        line=waitlist,
        disk=disk,
        kinds=kinds,
        slurm=slurm,
    )
    gpu_use = GpuUse(
        db,
        inventory,
        reader=reader,
        exporter=Exporter(app.dcgm_urls) if inventory is None and app.dcgm_urls else None,
        interval_s=app.meter_interval,
    )
    metering = MeteringLoop(
        db,
        courses,
        hub,
        servers,
        inventory,
        stop_grace_s=app.stop_grace,
        settle_grace_s=app.reconcile_grace,
        gpu_use=gpu_use,
    )
    core = ServiceCore(db, hub, courses, membership, admission, metering, waitlist=waitlist, slurm=slurm)
    kube = KubeSettings(parent=app)
    grading = (
        GradingManager(state, db, core, isolated=app.isolated, kube=kube, gpus=admission, parent=app)
        if with_grading
        else None
    )
    service = Service(
        db=db, hub=hub, inventory=inventory, core=core, kube=kube, grading=grading, disk=disk, slurm=slurm
    )
    if slurm is not None:  # Slurm's accounting settles its jobs' charges (slurm_usage.py)
        service.slurm_usage = SlurmUsage(db, parent=app)
    service.lti = app.lti_tool(state, core, grading) if with_lti else None
    if inventory is None and grading is not None and grading.backend == "kubernetes":
        # the cluster is warmed with placeholder pods, which grading Jobs' settings place
        service.placeholders = Placeholders(db, courses, admission, kube, app.images_dir, app.first_uid, parent=app)
    elif app.isolated:
        service.warm = admission.warm = WarmPool(db, courses, admission, state, app.first_uid, parent=app)
    if inventory is not None:  # local sandboxes: their cgroups' CPU time tells the idle rule what they used
        metering.sandbox_groups = idle.SandboxCpu(db, Path(state) / "work", service.warm)
    return service
