"""LTI 1.3 launches from an LMS (Moodle, Canvas, Open edX): ltiauthenticator's LTI 1.3 authenticator,
with the platform's keys fetched without blocking the hub, stable user names, and the launch told
to the aifhub service, which links the LMS course to an aifhub course, grants the launch's role and
says where the launch goes (that course's sandbox, optionally an assignment).
"""

import json
import time

import jwt
from ltiauthenticator.lti13.auth import LTI13Authenticator
from ltiauthenticator.lti13.error import InvalidAudienceError, LoginError, ValidationError
from ltiauthenticator.lti13.handlers import LTI13CallbackHandler, LTI13LoginInitHandler
from ltiauthenticator.lti13.validator import LTI13LaunchValidator
from ltiauthenticator.utils import convert_request_to_dict
from tornado import web
from tornado.httpclient import AsyncHTTPClient
from tornado.httputil import url_concat
from traitlets import Bool, Enum, Float, default

from . import names
from .service_link import ServiceLink

CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
# what of a launch the service needs: who, where from, in which role, and the LMS services it may call
LAUNCH_CLAIMS = (
    "iss",
    "aud",
    "sub",
    "email",
    "name",
    CLAIM + "deployment_id",
    CLAIM + "context",
    CLAIM + "roles",
    CLAIM + "resource_link",
    CLAIM + "custom",
    CLAIM + "target_link_uri",
    "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint",
    "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice",
)


def lti_username(claims, claim, style, issuer, casefold=False):
    """The user name of an LMS user from their launch claims or NRPS member record (same rule for both)."""
    value = claims.get(claim)
    if claim == "sub" and value is None:
        value = claims.get("user_id")  # NRPS names the launches' sub user_id
    return names.username_for(value, style, issuer.rstrip("/"), casefold)


class PlatformKeys:
    """The platform's JWKS, fetched asynchronously, cached, refetched for an unknown key id."""

    def __init__(self, url, min_refresh_s=30):
        self.url = url
        self.min_refresh_s = min_refresh_s
        self._keys = None
        self._fetched_at = 0.0

    async def _fetch(self):
        resp = await AsyncHTTPClient().fetch(self.url, request_timeout=15, raise_error=False)
        if resp.code != 200:
            raise ValidationError(f"the platform's key set at {self.url} answered {resp.code}")
        self._keys = jwt.PyJWKSet.from_dict(json.loads(resp.body))
        self._fetched_at = time.monotonic()

    async def key_for(self, token):
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise ValidationError(f"the id_token is not a JWT: {exc}")
        for attempt in (0, 1):
            if self._keys is None or (attempt and time.monotonic() - self._fetched_at > self.min_refresh_s):
                await self._fetch()
            for key in self._keys.keys:
                if kid is None or key.key_id == kid:
                    return key.key
        raise ValidationError(f"the platform's key set has no key {kid!r}")


class AifhubLTI13LoginInitHandler(LTI13LoginInitHandler):
    """The platform's login initiation; someone who follows the hub's own login button is told where to go."""

    def post(self):
        if not self.get_argument("iss", None):
            raise web.HTTPError(
                400,
                "This hub is an LTI 1.3 tool: open it from your course in your LMS "
                "(Moodle, Canvas, Open edX), where the course links to it.",
            )
        return super().post()

    get = post


class AifhubLTI13CallbackHandler(LTI13CallbackHandler):
    """The launch (id_token form post): validated as ltiauthenticator does, then sent where the service says."""

    async def post(self):
        auth = self.authenticator
        validator = LTI13LaunchValidator(parent=self.app)
        args = convert_request_to_dict(self.request.arguments)
        try:
            validator.validate_auth_response(args)
            self.check_state()
            id_token = await auth.decode_id_token(args["id_token"], validator)
            validator.validate_id_token(id_token)
            validator.validate_azp_claim(id_token, auth.client_id)
            self.check_nonce(id_token)
        except InvalidAudienceError as exc:
            raise web.HTTPError(401, str(exc))
        except ValidationError as exc:
            raise web.HTTPError(400, f"This LTI launch is not valid: {exc}")
        try:
            user = await self.login_user(id_token)
        except LoginError as exc:
            raise web.HTTPError(400, str(exc))
        if user is None:
            raise web.HTTPError(403, "This launch does not let you in.")
        self.redirect(self.launch_target(user, getattr(self, "aifhub_launch", {}) or {}))

    def launch_target(self, user, launch):
        """The course's sandbox (``spawn?opt-course=``), opening the assignment when the link names one."""
        course = launch.get("course")
        if not course:
            return self.get_next_url(user)
        query = {"opt-course": course}  # JupyterHub's prefix for user options in a query
        if launch.get("assignment"):
            query["next"] = f"{self.base_url}services/aifhub/courses/{course}#assignment-{launch['assignment']}"
        return (
            url_concat(f"{self.hub.base_url}spawn", query)
            if launch.get("open_sandbox", True)
            else f"{self.base_url}services/aifhub/courses/{course}"
        )


class AifhubLTI13Authenticator(ServiceLink, LTI13Authenticator):
    """LTI 1.3 launches: the LMS course decides the aifhub course, the LMS role the aifhub role."""

    login_handler = AifhubLTI13LoginInitHandler
    callback_handler = AifhubLTI13CallbackHandler

    username_style = Enum(
        list(names.STYLES),
        "hashed",
        help="How username_key becomes a user name: 'hashed' (stable, collision-free) or 'claim' (as sent, "
        "refused unless already a safe lower-case name). The service derives roster names from NRPS the same way.",
    ).tag(config=True)
    username_casefold = Bool(False, help="Lower-case the username claim before deriving the name.").tag(config=True)
    jwks_refresh_interval = Float(
        30.0,
        help="Least seconds between two fetches of the platform's key set when a launch names an unknown key.",
    ).tag(config=True)

    @default("username_key")
    def _username_key_default(self):
        return "sub"  # the LMS's stable user id; also what NRPS and AGS name user_id

    @default("tool_name")
    def _tool_name_default(self):
        return "aifhub"  # what the LMS shows for the tool installed from /hub/lti13/config

    @default("tool_description")
    def _tool_description_default(self):
        return "aifhub: course sandboxes (JupyterLab, with GPUs where a course has them), assignments and grades"

    def __init__(self, **kw):
        super().__init__(**kw)
        self._keys = PlatformKeys(self.jwks_endpoint, self.jwks_refresh_interval)

    async def decode_id_token(self, token, validator):
        key = await self._keys.key_for(token)
        try:
            return jwt.decode(
                token,
                key,
                algorithms=self.jwks_algorithms,
                audience=list(self.client_id),
                issuer=self.issuer,
                leeway=validator.time_leeway,
            )
        except jwt.InvalidAudienceError as exc:
            raise InvalidAudienceError(str(exc))
        except jwt.PyJWTError as exc:
            raise ValidationError(f"the id_token does not verify: {exc}")

    def get_username(self, token):
        try:
            return lti_username(token, self.username_key, self.username_style, self.issuer, self.username_casefold)
        except names.UnusableName as exc:
            raise LoginError(f"Your LMS account cannot be used here: {exc}.")

    async def authenticate(self, handler, data=None):
        data = data or {}
        launch = {k: data[k] for k in LAUNCH_CLAIMS if k in data}
        return {"name": self.get_username(data), "auth_state": {"lti_launch": launch}}

    def check_allowed(self, username, authentication=None):
        return True  # a valid launch from the configured platform; the service refuses unlinked LMS courses

    async def run_post_auth_hook(self, handler, auth_model):
        auth_model = await super().run_post_auth_hook(handler, auth_model)
        launch = (auth_model.get("auth_state") or {}).get("lti_launch") or {}
        answer = await self.report_login({"user": auth_model["name"], "source": "lti", "launch": launch})
        handler.aifhub_launch = answer.get("launch") or {}
        return auth_model
