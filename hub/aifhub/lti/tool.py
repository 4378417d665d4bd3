"""The service's LTI 1.3 tool: settings (the ``lti13`` section of the login file), the tool's key,
the platform client, launches, roster sync and grade passback loops."""

import asyncio
import logging
from pathlib import Path

from traitlets import Bool, Dict, Enum, Float, Integer, List, Unicode, Union, default, validate
from traitlets.config import LoggingConfigurable

from ..auth import names
from ..auth.claims import COURSE_ID
from . import links
from .client import PlatformClient
from .keys import ToolKeys
from .models import LtiLink
from .passback import Passback
from .roster import sync_link

log = logging.getLogger(__name__)


def _nrps_link_ids(s):
    return [link.id for link in s.query(LtiLink).filter(LtiLink.memberships_url.is_not(None))]


class LtiTool(LoggingConfigurable):
    """LTI 1.3 Advantage for one platform (LMS): launches, NRPS rosters, AGS grade passback."""

    issuer = Unicode(
        help="The platform's issuer (as in its launches' iss claim), e.g. https://moodle.example.org."
    ).tag(config=True)
    client_id = Union(
        [Unicode(), List(Unicode())],
        help="The client id(s) the platform gave this tool; the first one signs the tool's service requests.",
    ).tag(config=True)
    deployment_ids = List(
        Unicode(),
        help="The deployment ids the platform gave this tool (the deployment_id claim of its launches; Moodle shows "
        "it on the tool's registration, Canvas on the developer key's deployment). Launches from any other "
        "deployment of the platform are refused: whoever can deploy the tool elsewhere on the platform is no one "
        "you have vouched for.",
    ).tag(config=True)
    token_url = Unicode(
        help="The platform's OAuth2 token endpoint for LTI Advantage services (Moodle: "
        "<moodle>/mod/lti/token.php; Canvas: https://sso.canvaslms.com/login/oauth2/token)."
    ).tag(config=True)
    course_map = Dict(
        help="LMS course (LTI context id) → aifhub course id. Only mapped LMS courses open an aifhub course; a link's "
        "custom parameter course=<id> may repeat the mapping but never choose another course.",
    ).tag(config=True)
    key_file = Unicode(
        help="The tool's private RSA key (PEM), made on first start. Default: <state>/secrets/lti-tool-key.pem. "
        "Its public half is served at /services/aifhub/lti/jwks for the platform."
    ).tag(config=True)
    username_key = Unicode(
        "sub",
        help="Claim (launch) or member field (NRPS) that names a user; 'sub' is the "
        "LMS's stable user id (NRPS: user_id).",
    ).tag(config=True)
    username_style = Enum(
        list(names.STYLES),
        "hashed",
        help="As the hub's AifhubLTI13Authenticator.username_style "
        "(both must agree: roster names and launch names are the same people).",
    ).tag(config=True)
    username_casefold = Bool(False, help="Lower-case the username claim before deriving the name.").tag(config=True)
    roster_sync_interval = Float(
        900.0,
        help="Seconds between NRPS roster syncs of every linked course (an "
        "instructor's launch also syncs their course).",
    ).tag(config=True)
    passback_interval = Float(
        5.0, help="Seconds between looks for scores that are due (release wakes it at once)."
    ).tag(config=True)
    passback_attempts = Integer(
        8, help="Attempts to send one score before it is marked failed (instructors can resend)."
    ).tag(config=True)
    passback_backoff = Float(5.0, help="Seconds before the first retry of a failed send; each retry doubles it.").tag(
        config=True
    )
    passback_backoff_max = Float(900.0, help="Longest wait between two attempts, in seconds.").tag(config=True)
    passback_concurrency = Integer(4, help="Scores sent to the platform at once.").tag(config=True)

    @validate("course_map")
    def _validate_course_map(self, proposal):
        for context, course in proposal.value.items():
            if not (isinstance(course, str) and COURSE_ID.match(course)):
                raise ValueError(f"course_map[{context!r}]: {course!r} is not an aifhub course id ([a-z0-9-])")
        return {str(k): v for k, v in proposal.value.items()}

    @validate("passback_attempts", "passback_concurrency")
    def _validate_positive_int(self, proposal):
        if proposal.value < 1:
            raise ValueError(f"{proposal.trait.name} must be at least 1, got {proposal.value}")
        return proposal.value

    @validate("roster_sync_interval", "passback_interval", "passback_backoff", "passback_backoff_max")
    def _validate_positive(self, proposal):
        if proposal.value <= 0:
            raise ValueError(f"{proposal.trait.name} must be a positive number of seconds, got {proposal.value}")
        return proposal.value

    @default("key_file")
    def _key_file_default(self):
        return str(self.state_dir / "secrets" / "lti-tool-key.pem")

    def __init__(self, state_dir, core, grading=None, **kw):
        self.state_dir = Path(state_dir)
        super().__init__(**kw)
        missing = [t for t in ("issuer", "client_id", "deployment_ids", "token_url") if not getattr(self, t)]
        if missing:
            raise ValueError(f"the lti13 settings need {', '.join(missing)} (see docs/login.md)")
        self.core = core
        self.keys = ToolKeys(self.key_file)
        self.client = PlatformClient(self.token_url, self.primary_client_id, self.keys)
        self.passback = Passback(self, core, grading)
        self._tasks = []
        if grading is not None:
            grading.after_feedback.append(self.passback.feedback_released)

    @property
    def primary_client_id(self):
        return self.client_id if isinstance(self.client_id, str) else self.client_id[0]

    # -- launches ----------------------------------------------------------------

    async def record_launch(self, user, launch):
        """``(refusal or None, {course: role}, launch answer)`` for a validated launch by ``user``."""
        f = links.launch_fields(launch)
        if f["issuer"].rstrip("/") != self.issuer.rstrip("/"):
            return f"Launches from {f['issuer']!r} are not accepted here.", {}, {}
        if f["deployment_id"] not in self.deployment_ids:
            log.warning("Refused a launch from the unconfigured deployment %r of %s", f["deployment_id"], f["issuer"])
            return (
                f"This link comes from a deployment of the tool ({f['deployment_id']!r}) that aifhub was not told "
                "about. Ask the aifhub administrator to add it to deployment_ids in the LTI settings.",
                {},
                {},
            )
        try:
            course_id = links.decide_course(self, self.core.catalog, f)
        except links.LaunchRefused as exc:
            return str(exc), {}, {}
        if f["role"] is None:
            return (
                ("Your role in this LMS course is neither learner nor instructor, so it opens no aifhub course."),
                {},
                {},
            )
        link_id = await self.core.db.run(links.record, self, f, course_id, user)
        if f["role"] == "instructor":
            self._spawn(self.sync_roster(link_id))
        course = self.core.catalog.get(course_id)
        return (
            None,
            {course_id: f["role"]},
            {"course": course_id, "role": f["role"], "assignment": links.assignment_of(course, f["custom"])},
        )

    # -- loops --------------------------------------------------------------------

    def _spawn(self, coro):
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def sync_roster(self, link_id):
        try:
            return await sync_link(self, self.core, link_id)
        except Exception:
            log.exception("Roster sync of link %s failed", link_id)

    async def sync_all(self):
        for link_id in await self.core.db.run(_nrps_link_ids):
            await self.sync_roster(link_id)

    async def _passback_loop(self):
        while True:
            try:
                await self.passback.run_due()
            except Exception:
                log.exception("Grade passback failed; trying again")
            try:
                await asyncio.wait_for(self.passback.wake.wait(), self.passback_interval)
            except asyncio.TimeoutError:
                pass
            self.passback.wake.clear()

    async def _roster_loop(self):
        while True:
            await asyncio.sleep(self.roster_sync_interval)
            await self.sync_all()

    def start(self):
        self._loops = [asyncio.ensure_future(self._passback_loop()), asyncio.ensure_future(self._roster_loop())]

    async def stop(self):
        for task in getattr(self, "_loops", []) + list(self._tasks):
            task.cancel()
