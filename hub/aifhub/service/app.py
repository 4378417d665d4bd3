"""The aifhub service application: configuration, web routes and background loops."""

import asyncio
import logging
import os
import secrets
import signal
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpserver import HTTPServer
from traitlets import Bool, CaselessStrEnum, Dict, Float, Integer, List, Unicode, default, validate
from traitlets.config import Application

from .. import __version__, idranges
from ..runstate import write_service_pid
from ..catalog.images import images_dir_for
from ..state import lease
from ..state.db import sqlite_url
from ..gpus.kinds import load_kinds, parse_kinds
from .gpu_pool import DEFAULT_KIND, parse_gpus
from ..grading.manager import GradingManager
from ..kube.settings import KubeSettings
from ..auth import handlers as auth_handlers
from ..auth.grants import refresh_staff
from ..lti import handlers as lti_handlers
from ..credentials.issuer import CredentialIssuer
from ..credentials.service import Credentials
from ..classroom.service import Classroom
from . import (
    access_log,
    api,
    classroom_api,
    classroom_pages,
    credentials_api,
    credentials_pages,
    grading_api,
    internal,
    ledger_api,
    materials_api,
    pages,
)
from .queue_status import QueueStatusHandler
from .slurm_accounts import SlurmAccounts
from .slurm_usage import SlurmUsage
from .disk_watch import DiskWatch
from .placeholders import Placeholders
from .warm_pool import WarmPool
from .hubapi import HubAPIError, HubClient
from .wiring import wire
from .shutdown import last_pass, stop_sandboxes

HERE = Path(__file__).parent


class AifhubService(Application):
    """The aifhub service: catalog, GPU pool, sessions, and the pages and API over them."""

    classes = [GradingManager, KubeSettings, WarmPool, DiskWatch, Placeholders, CredentialIssuer]
    classes += [SlurmAccounts, SlurmUsage]  # sandboxes on Slurm

    name = "aifhub-service"
    version = __version__
    description = "aifhub's JupyterHub-managed service (started by the hub; see `aifhub up`)."

    aliases = {
        "state-dir": "AifhubService.state_dir",
        "courses": "AifhubService.courses_dir",
        "images": "AifhubService.images_dir",
        "gpus": "AifhubService.gpus",
        "gpu-kind": "AifhubService.gpu_kind",
        "gpu-kinds": "AifhubService.gpu_kinds_file",
        "nvml-recording": "AifhubService.nvml_recording",
        "meter-interval": "AifhubService.meter_interval",
        "db-url": "AifhubService.db_url",
        "log-level": "Application.log_level",
        "stop-grace": "AifhubService.stop_grace",
        "sandboxes": "AifhubService.sandboxes",
    }
    flags = {
        "demo": ({"AifhubService": {"demo": True}}, "seed the demo allocation"),
        "stop-sandboxes-on-exit": (
            {"AifhubService": {"stop_sandboxes_on_exit": True}},
            "have the hub stop every sandbox before the service exits",
        ),
    }

    state_dir = Unicode(
        ".aifhub", help="Directory holding aifhub's state (database, published courses, work folders)."
    ).tag(config=True)
    courses_dir = Unicode("courses", help="Directory of course folders, each with a course.yaml.").tag(config=True)
    images_dir = Unicode(
        help="Directory of sandbox images, each <name>/image.yaml. Default: $AIFHUB_IMAGES, else sandbox_images/ "
        "beside the courses folder when there is one, else sandbox_images/ in the working directory.",
    ).tag(config=True)
    db_url = Unicode(
        help="SQLAlchemy URL of the state database (ledger, grading queue; gradebooks too when PostgreSQL). "
        "Default: $AIFHUB_DB_URL, else SQLite in the state directory. Prefer the environment variable for a URL "
        "with a password: a command line is readable by every user of the machine.",
    ).tag(config=True)
    gpus = Unicode(
        "",
        help="GPUs to hand out: '' discovers them with NVML; 'none' for none; '0,1' for those device ids (of gpu_kind); "
        "'kubernetes' when the cluster's device plugin places GPUs.",
    ).tag(config=True)
    gpu_kind = Unicode(DEFAULT_KIND, help="GPU kind of the devices listed in `gpus`.").tag(config=True)
    gpu_kinds = List(
        Dict(),
        help="GPU kinds and how they share GPUs: entries {name, sharing: whole|mig|timeslice|mps, replicas (timeslice, "
        "mps), memory (mps: each holder's pinned GPU memory), profile (mig, e.g. 1g.10gb), weight (GPU-hours per hour; "
        "default 1, N/7 for an Ng MIG slice, 1/replicas for a share), devices (GPU indexes the kind takes), "
        "allow_cross_course (timeslice, mps: let two courses share a GPU without memory isolation)}. A course's "
        "sandbox.gpu.kind names one. See docs/gpus.md.",
    ).tag(config=True)
    gpu_kinds_file = Unicode(
        "",
        help="YAML file with a `gpu_kinds:` list (the same entries as gpu_kinds), read at start; wins over gpu_kinds.",
    ).tag(config=True)
    dcgm_urls = List(
        Unicode(),
        help="URLs of the DCGM exporters' /metrics (one per GPU node, or a Service in front of them) that give GPU "
        "use per pod on Kubernetes; empty: no GPU telemetry there (the idle rule goes by activity alone).",
    ).tag(config=True)
    nvml_recording = Unicode(
        "",
        help="JSON file of recorded NVML discovery and samples to use instead of the driver (simulated GPUs for "
        "tests and demos on machines without one; see aifhub.gpus.nvml.record). Empty: the NVIDIA driver.",
    ).tag(config=True)
    meter_interval = Float(60.0, help="Seconds between reconciliations with the hub's list of running servers.").tag(
        config=True
    )
    catalog_poll_interval = Float(
        5.0, help="Seconds between checks of the course files for changes (publishing needs no restart)."
    ).tag(config=True)
    reconcile_grace = Float(
        10.0,
        help="A session admitted less than this many seconds before the hub's list of running servers was read "
        "is never settled by reconciliation (the hub registers a spawn before it asks for admission, so a few seconds suffice).",
    ).tag(config=True)
    stop_grace = Float(
        120.0,
        help="Seconds of notice a learner gets before their sandbox is stopped for running out of GPU or CPU time.",
    ).tag(config=True)
    waitlist = Bool(
        True,
        help="A learner who finds every GPU of the local pool busy waits in line (told their place and an "
        "estimate) instead of being refused.",
    ).tag(config=True)
    waitlist_hold = Float(
        180.0,
        help="Seconds a freed GPU is held for the learner at the head of the waitlist before it goes to the next.",
    ).tag(config=True)
    waitlist_interval = Float(
        1.0,
        help="Seconds between the waitlist's checks for expired holds and devices freed without a release.",
    ).tag(config=True)
    default_session_hours = Float(
        4.0,
        help="Expected length of a session, for the hold placed at admission, when the course sets no max_session.",
    ).tag(config=True)
    demo = Bool(False, help="Seed the demo allocation that pays for the example courses (what `aifhub up` runs).").tag(
        config=True
    )
    demo_allocations = List(
        [
            {
                "id": "EHPC-AIF-2026-PG01",
                "gpu_hours": 500,
                "start": "2026-01-01",
                "end": "2027-12-31",
                "title": "AI Factory training playground (demo)",
                "access_call": "Playground",
                "owner": "admin",
            }
        ],
        help="Allocations created when `demo` is on and they do not exist yet.",
    ).tag(config=True)
    stop_sandboxes_on_exit = Bool(
        False,
        help="When the hub stops the service, have it stop every sandbox first and wait for them (at most "
        "exit_timeout), so each is released, and charged, at its real stop. Set it where the hub stops the "
        "sandboxes at its own shutdown anyway (JupyterHub's cleanup_servers, which the embedded hub keeps on); "
        "leave it off where sandboxes outlive a hub restart (the z2jh chart).",
    ).tag(config=True)
    exit_timeout = Float(
        8.0,
        help="Seconds the service waits, when stopped, for the sandboxes it asked the hub to stop "
        "(stop_sandboxes_on_exit). JupyterHub waits 10 s for a service to exit before it sends SIGTERM; a second "
        "signal cuts the wait short. What still runs then is charged up to the service's stop.",
    ).tag(config=True)
    first_uid = Integer(
        idranges.LEARNER_FIRST,
        help="First uid handed to learners' sandboxes when the hub runs as root (`aifhub up` claims "
        f"{idranges.LEARNER_SPAN} from it machine-wide: a second installation needs another range).",
    ).tag(config=True)
    isolated = Bool(help="Whether sandboxes run under per-learner uids (the hub runs as root).").tag(config=True)
    sandboxes = CaselessStrEnum(
        ["local", "slurm", "kubernetes"],
        "local",
        help="Where the hub's sandboxes run: local, slurm (the service keeps Slurm's associations in step with the "
        "ledger: SlurmAccounts) or kubernetes.",
    ).tag(config=True)
    help_share_minutes = Float(
        30.0,
        help="Minutes a learner's accept lets a helper into their sandbox (JupyterHub's sharing); the learner may "
        "end it sooner, and lowering the hand ends it too.",
    ).tag(config=True)
    internal_token = Unicode(
        help="Secret the hub's spawner presents on the internal endpoints. Default: $AIFHUB_INTERNAL_TOKEN."
    ).tag(config=True)

    @default("images_dir")
    def _images_dir_default(self):
        return str(images_dir_for(self.courses_dir))

    @default("db_url")
    def _db_url_default(self):
        return os.environ.get("AIFHUB_DB_URL") or sqlite_url(Path(self.state_dir).resolve() / "aifhub.sqlite")

    @default("internal_token")
    def _internal_token_default(self):
        return os.environ.get("AIFHUB_INTERNAL_TOKEN", "")

    @default("isolated")
    def _isolated_default(self):
        return os.environ.get("AIFHUB_ISOLATED", "1" if os.geteuid() == 0 else "0") == "1"

    @validate("gpu_kinds")
    def _validate_gpu_kinds(self, proposal):
        parse_kinds(proposal.value)  # raises ValueError saying what is wrong and what is expected
        return proposal.value

    def kinds(self):
        """``{name: GpuKind}`` from ``gpu_kinds_file`` or ``gpu_kinds``; ValueError naming what is wrong."""
        return load_kinds(self.gpu_kinds_file) if self.gpu_kinds_file else parse_kinds(self.gpu_kinds)

    @validate("gpus")
    def _validate_gpus(self, proposal):
        parse_gpus(proposal.value)  # raises ValueError saying what is expected
        return proposal.value

    @validate(
        "meter_interval",
        "catalog_poll_interval",
        "waitlist_hold",
        "waitlist_interval",
        "exit_timeout",
        "help_share_minutes",
    )
    def _validate_positive(self, proposal):
        if proposal.value <= 0:
            raise ValueError(f"{proposal.trait.name} must be a positive number of seconds, got {proposal.value}")
        return proposal.value

    @validate("first_uid")
    def _validate_first_uid(self, proposal):
        if proposal.value < 1000:
            raise ValueError(f"first_uid must be at least 1000 (system accounts live below), got {proposal.value}")
        return proposal.value

    def course_dirs(self):
        """Where courses come from: the courses directory, then courses published into the state."""
        return [Path(self.courses_dir).resolve(), Path(self.state_dir).resolve() / "courses"]

    def make_app(self, core, grading=None, hub_auth=None, lti=None):
        """The web application over ``core`` and ``grading``; ``hub_auth`` defaults to HubOAuth from the
        hub's environment variables (the tests pass one that needs no hub)."""
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/aifhub/")
        hub_prefix = os.environ.get("JUPYTERHUB_BASE_URL", "/") + "hub/"
        route = lambda path: url_path_join(prefix, path)  # noqa: E731
        handlers = [
            (prefix, pages.HomePage),
            (route("oauth_callback"), HubOAuthCallbackHandler),
            (route(r"courses/([a-z0-9-]+)"), pages.CoursePage),
            (route(r"courses/([a-z0-9-]+)/instructor"), pages.InstructorPage),
            (route(r"courses/([a-z0-9-]+)/enrol"), pages.EnrolAction),
            (route(r"courses/([a-z0-9-]+)/stop"), pages.StopAction),
            (route(r"courses/([a-z0-9-]+)/waitlist/leave"), pages.LeaveWaitlistAction),
            (route(r"courses/([a-z0-9-]+)/roster/(add|remove|import)"), pages.RosterAction),
            (
                route(
                    r"courses/([a-z0-9-]+)/assignments/([A-Za-z0-9][A-Za-z0-9._-]*)/(release|collect|autograde|feedback)"
                ),
                pages.AssignmentAction,
            ),
            (
                route(
                    r"courses/([a-z0-9-]+)/assignments/([A-Za-z0-9][A-Za-z0-9._-]*)/feedback/([A-Za-z0-9][A-Za-z0-9._ -]*)"
                ),
                pages.FeedbackPage,
            ),
            (route("admin"), pages.AdminPage),
            (route("admin/allocations"), pages.AllocationAction),
            (route(r"admin/allocations/([A-Za-z0-9._-]+)/(topup|close)"), pages.AllocationAction),
            (route("api/v1/me"), api.MeHandler),
            (route("api/v1/courses"), api.CoursesHandler),
            (route(r"api/v1/courses/([a-z0-9-]+)/enrol"), api.EnrolHandler),
            (route(r"api/v1/courses/([a-z0-9-]+)/materials"), materials_api.MaterialsHandler),
            (route(r"api/v1/courses/([a-z0-9-]+)/roster"), api.RosterHandler),
            (route("api/v1/catalog/reload"), api.CatalogReloadHandler),
            (route("api/v1/pool"), api.PoolHandler),
            (route("api/v1/allocations"), ledger_api.AllocationsHandler),
            (route(r"api/v1/allocations/([A-Za-z0-9._-]+)"), ledger_api.AllocationHandler),
            (route(r"api/v1/allocations/([A-Za-z0-9._-]+)/(topup|close)"), ledger_api.AllocationHandler),
            (route("api/v1/usage"), ledger_api.UsageHandler),
            (route("metrics"), ledger_api.MetricsHandler),
            (route("api/v1/internal/notices"), internal.NoticesHandler),
            (route("api/v1/internal/offers"), internal.OffersHandler),
            (route("api/v1/internal/admit"), internal.AdmitHandler),
            (route("api/v1/internal/release"), internal.ReleaseHandler),
            (route("api/v1/internal/users"), internal.UsersCreatedHandler),
            (route("api/v1/internal/running"), internal.RunningHandler),
            (route("api/v1/internal/sandbox-event"), internal.SandboxEventHandler),
            (route("api/v1/internal/queue"), QueueStatusHandler),
            (route(r"api/v1/internal/waitlist/([0-9]{1,12})"), internal.WaitlistEntryHandler),
            (route(r"api/v1/internal/warm/([0-9]{1,12})/handover"), internal.WarmHandoverHandler),
            (route(r"api/v1/me/waitlist/([a-z0-9-]+)"), api.MyWaitlistHandler),
            (route("api/v1/waitlist"), api.WaitlistHandler),
            *grading_api.routes(route),
            *classroom_api.routes(route),
            *classroom_pages.routes(route),
            *credentials_api.routes(route),
            *credentials_pages.routes(route),
            *auth_handlers.routes(route),
            *lti_handlers.routes(route),
        ]
        return web.Application(
            handlers,
            cookie_secret=secrets.token_bytes(32),
            template_path=str(HERE / "templates"),
            xsrf_cookies=False,  # HubOAuthenticated checks XSRF on cookie-authenticated requests
            hub_auth=hub_auth or HubOAuth.instance(),
            aifhub_core=core,
            aifhub_grading=grading,
            aifhub_lti=lti,
            aifhub_credentials=self.credentials(core, grading),
            aifhub_classroom=self.classroom(core),
            aifhub_internal_token=self.internal_token,
            aifhub_isolated=self.isolated,
            hub_prefix=hub_prefix,
            service_prefix=prefix,
            login_url=url_path_join(hub_prefix, "login"),
            log_function=access_log.log_request,
        )

    def classroom(self, core):
        """The live workshop's hands, consented help and announcements (one per service: its loop ends shares)."""
        if getattr(self, "_classroom", None) is None or self._classroom.db is not core.db:
            self._classroom = Classroom(
                core.db,
                core.courses,
                core.membership,
                core.hub,
                share_limit_s=int(self.help_share_minutes * 60),
                work_root=Path(self.state_dir).resolve() / "work" if core.admission.inventory is not None else None,
                isolated=self.isolated,
                first_uid=self.first_uid,
            )
        return self._classroom

    def credentials(self, core, grading):
        """The completion credentials of this service (the issuer's keys live in the state directory)."""
        return Credentials(core.db, lambda: core.catalog, CredentialIssuer(self.state_dir, parent=self), grading)

    def lti_tool(self, state, core, grading):
        """The LTI 1.3 tool (AGS passback, NRPS rosters) when the hub logs in with --auth lti13, else None."""
        if os.environ.get("AIFHUB_AUTH") != "lti13":
            return None
        from ..auth.config import load
        from ..lti.tool import LtiTool

        _hub, settings = load(os.environ["AIFHUB_AUTH_CONFIG"], "lti13")
        try:
            return LtiTool(state, core, grading, parent=self, **settings)
        except ValueError as exc:  # the lti13 settings cannot work
            raise ValueError(f"LTI 1.3: {exc}") from exc

    async def _every(self, seconds, what, step):
        """Run ``step`` every ``seconds``; a failure is logged and retried next time."""
        while True:
            try:
                await step()
            except HubAPIError as exc:
                self.log.warning("%s: %s", what, exc)
            except Exception:
                self.log.exception("%s failed", what)
            await asyncio.sleep(seconds)

    @staticmethod
    async def _renew_lease(db, holder):
        await db.run(lease.renew, holder)

    def prepare_state(self):
        """The state directory, before the event loop starts."""
        state = Path(self.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        (state / "courses").mkdir(exist_ok=True)
        write_service_pid(state)
        return state

    async def run(self):
        hub = HubClient(
            os.environ.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api"),
            os.environ.get("JUPYTERHUB_API_TOKEN", ""),
        )
        try:
            service = wire(self, hub)  # every part, made and connected in one place
        except ValueError as exc:  # settings that contradict each other (grading's, or the lti13 settings)
            self.log.critical("%s", exc)
            self.exit(1)
        db, core, grading, lti = service.db, service.core, service.grading, service.lti
        if service.inventory is None:
            self.log.info("GPU pool: placed by the Kubernetes scheduler")
        else:
            self.log.info("GPU pool: %s", ", ".join(f"{d.id} ({d.kind})" for d in service.inventory) or "none")
        holder = lease.me()
        await self._renew_lease(db, holder)  # from now on the CLI's offline writes refuse
        if self.demo:
            await core.seed_allocations(self.demo_allocations)
        for kind in await core.admission.record_rates():
            self.log.info(
                "Rate card: GPU kind %s weighs %g GPU-hours per hour from now on",
                kind,
                core.admission.kinds[kind].weight,
            )
        await refresh_staff(core)  # instructors granted by logins

        url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
        server = HTTPServer(self.make_app(core, grading, lti=lti), xheaders=True)
        server.listen(url.port, url.hostname)
        self.log.info("aifhub service listening on %s", url.geturl())

        await hub.wait_until_up()
        await core.membership.sync_groups()
        await grading.start()
        if lti is not None:
            lti.start()
        loops = [
            asyncio.ensure_future(self._every(self.meter_interval, "metering", core.metering.meter)),
            asyncio.ensure_future(self._every(self.catalog_poll_interval, "catalog watch", core.watch_catalog)),
            asyncio.ensure_future(self._every(lease.RENEW_S, "state lease", lambda: self._renew_lease(db, holder))),
        ]
        if core.waitlist is not None:
            loops.append(asyncio.ensure_future(core.waitlist.run(self.waitlist_interval)))
        loops.append(asyncio.ensure_future(self.classroom(core).run()))  # ends helpers' access when its time is up
        for part in (service.placeholders, service.warm, service.disk, service.slurm, service.slurm_usage):
            if part is not None:
                loops.append(asyncio.ensure_future(part.run()))
        if service.warm is None and service.placeholders is None:
            if any(c.sessions for c in core.catalog.courses.values()):
                self.log.warning(
                    "Warm sandboxes are off: they run under learners' uids, and this service does not isolate "
                    "learners (it does not run as root, or AIFHUB_ISOLATED=0)"
                )
        stopping, hurry = asyncio.Event(), asyncio.Event()

        def on_signal():  # the first signal stops the service; another one cuts its wait for sandboxes short
            (hurry if stopping.is_set() else stopping).set()

        for sig in (signal.SIGINT, signal.SIGTERM):  # set explicitly: a parent may have ignored them
            asyncio.get_running_loop().add_signal_handler(sig, on_signal)
        try:
            await stopping.wait()
            self.log.info("aifhub service stopping")
            for loop in loops:
                loop.cancel()
            if self.stop_sandboxes_on_exit:  # while this server still answers their release
                await stop_sandboxes(hub, self.exit_timeout, hurry)
            await last_pass(core.metering)
        finally:
            server.stop()
            for loop in loops:
                loop.cancel()
            try:
                await db.run(lease.give_up, holder)
            finally:
                await service.close()  # warm sandboxes, grading workers, the LTI tool, then the database

    def start(self):
        logging.basicConfig(level=self.log_level)
        self.prepare_state()
        try:
            asyncio.run(self.run())
        except KeyboardInterrupt:
            pass


def main(argv=None):
    AifhubService.launch_instance(argv)
