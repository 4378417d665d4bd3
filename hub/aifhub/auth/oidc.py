"""OIDC login (MyAccessID, eduGAIN proxies, Keycloak, Dex, any OpenID Connect provider).

:class:`AifhubOIDCAuthenticator` is oauthenticator's ``GenericOAuthenticator`` with what an AI
Factory needs on top: endpoints discovered from the issuer, the client secret from a file or the
environment, user names that are stable and cannot collide (:mod:`.names`), entitlement or group
claims mapped to course roles (:mod:`.claims`) and recorded by the aifhub service, and an allow
rule for who may log in at all.
"""

import contextvars
import os
from html import escape
from pathlib import Path

import requests
from jupyterhub.utils import url_path_join
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthCallbackHandler
from tornado import web
from traitlets import Bool, Enum, List, Unicode, default, validate

from . import names
from .claims import DEFAULT_RULES, claim_values, grants_from, parse_rules
from .people import profile_of
from .service_link import ServiceLink

DISCOVERY_TIMEOUT = 15
_REFRESHING = contextvars.ContextVar("aifhub_oidc_refreshing", default=False)
REFUSED = (
    "Your account is not entitled to any course on this hub, so you cannot log in. Ask the instructor of "
    "your course (or the AI Factory's training team) to add you to the course's group, then log in again."
)


class ConfigError(ValueError):
    """The OIDC settings cannot work; the message names the setting."""


def discover(issuer, timeout=DISCOVERY_TIMEOUT):
    """The provider's ``.well-known/openid-configuration``; raises ConfigError saying what failed."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        resp = requests.get(url, timeout=timeout)
        resp.raise_for_status()
        doc = resp.json()
    except (requests.RequestException, ValueError) as exc:
        raise ConfigError(f"cannot read the OpenID configuration of the issuer {issuer} at {url}: {exc}") from exc
    if doc.get("issuer", "").rstrip("/") != issuer.rstrip("/"):
        raise ConfigError(
            f"the provider at {url} names itself {doc.get('issuer')!r}, not the configured issuer {issuer!r}"
        )
    return doc


def refusal(message, logout_url, provider):
    """The 403 of a refused login: its message once (the page's heading says only "Forbidden"), and the way out:
    log out (of the provider too, where it allows) and sign in with another account."""
    exc = web.HTTPError(403, reason="Forbidden")
    exc.jupyterhub_message = message
    exc.jupyterhub_html_message = (
        f'<span id="refusal">{escape(message)}</span><br><br>'
        f"Signed in with the wrong account? "
        f'<a id="switch-account" class="btn btn-primary" href="{escape(logout_url, quote=True)}">'
        f"Log out{escape(f' of {provider}') if provider else ''} and sign in with another account</a>"
    )
    return exc


class RefusalCallbackHandler(OAuthCallbackHandler):
    """The OAuth callback, whose refusals show their message once and a way to log out or switch account."""

    async def get(self):
        try:
            return await super().get()
        except web.HTTPError as exc:
            if exc.status_code != 403 or getattr(exc, "jupyterhub_html_message", None):
                raise
            message = (
                exc.log_message % exc.args if exc.args else (exc.log_message or self.authenticator.custom_403_message)
            )
            logout = url_path_join(self.hub.base_url, "logout")
            raise refusal(message, logout, self.authenticator.login_service) from None


class AifhubOIDCAuthenticator(ServiceLink, GenericOAuthenticator):
    """Log in with an OpenID Connect provider; claims decide course roles and who may log in."""

    callback_handler = RefusalCallbackHandler

    issuer = Unicode(
        help="The provider's issuer URL (MyAccessID: https://proxy.myaccessid.org/). The authorize, token, userinfo "
        "and logout endpoints are discovered from its /.well-known/openid-configuration unless set. User names "
        "are derived from it too: changing it changes every hashed user name.",
    ).tag(config=True)
    client_secret_file = Unicode(
        help="File holding the client secret (read at start, whitespace stripped). Preferred to putting the secret in "
        "a config file; the default is $AIFHUB_OIDC_CLIENT_SECRET, else $OAUTH_CLIENT_SECRET.",
    ).tag(config=True)
    username_style = Enum(
        list(names.STYLES),
        "hashed",
        help="How the username_claim becomes a user name: 'hashed' (<readable>-<12 base32 of a SHA-256 of issuer and "
        "claim>, stable and collision-free for any claim) or 'claim' (the claim itself, refused unless already a "
        "safe lower-case name).",
    ).tag(config=True)
    username_casefold = Bool(
        False,
        help="Lower-case the username_claim before deriving the name (for identifiers compared without case, "
        "such as eduPersonUniqueId).",
    ).tag(config=True)
    groups_claim = Unicode(
        "eduperson_entitlement",
        help="Claim holding the person's entitlements or groups (a list of strings; dotted for a nested claim), "
        "matched against course_rules. MyAccessID: eduperson_entitlement; Keycloak and Dex: groups.",
    ).tag(config=True)
    course_rules = List(
        DEFAULT_RULES,
        help="Rules mapping values of groups_claim to roles: [{pattern, role, course?}], role learner | instructor | "
        "admin; in a pattern {course} stands for a course id and * for any text within one segment (no ':' or '#'). "
        "An admin rule has no *, an instructor rule none in an entitlement's namespace or authority: name the ones "
        "you trust, e.g. urn:geant:myaccessid.org:group:aifhub:admins#aai.example. Default: none (no claim grants "
        "anything).",
    ).tag(config=True)
    name_claim = Unicode(
        "name",
        help="Claim holding the person's name, shown beside their (opaque, stable) user name on rosters, grades and "
        "usage; given_name and family_name are used when it is missing. MyAccessID, Keycloak and Dex: name.",
    ).tag(config=True)
    email_claim = Unicode(
        "email",
        help="Claim holding the person's e-mail address, shown beside their user name (empty: none is shown).",
    ).tag(config=True)
    allow = Enum(
        ["entitled", "any"],
        "entitled",
        help="Who may log in: 'entitled' (people whose claims grant a course or admin rights, plus allowed_users and "
        "admin_users) or 'any' (everyone the provider authenticates; open courses and MOOCs).",
    ).tag(config=True)

    @default("client_secret")
    def _client_secret_default(self):
        return os.environ.get("AIFHUB_OIDC_CLIENT_SECRET") or os.environ.get("OAUTH_CLIENT_SECRET", "")

    @default("username_claim")
    def _username_claim_default(self):
        return "sub"

    @default("scope")
    def _scope_default(self):
        return ["openid", "profile", "email"]

    @default("custom_403_message")
    def _custom_403_default(self):
        return REFUSED

    @default("enable_auth_state")
    def _auth_state_default(self):
        return True  # the access token is checked again on refresh: an expired one means logging in again

    @validate("course_rules")
    def _validate_rules(self, proposal):
        parse_rules(proposal.value)  # raises ValueError saying which rule is wrong and how
        return proposal.value

    @validate("issuer")
    def _validate_issuer(self, proposal):
        value = proposal.value
        if value and not value.startswith(("https://", "http://")):
            raise ValueError(f"issuer must be an https:// URL, got {value!r}")
        return value

    def __init__(self, **kw):
        super().__init__(**kw)
        self._rules = parse_rules(self.course_rules)
        if not self._rules and self.allow == "entitled":
            self.log.warning(
                "OIDC: no course_rules, so no claim grants a course or admin rights: only allowed_users and "
                "admin_users can log in. Add rules naming the entitlement namespace and authority you trust "
                "(see docs/login.md)."
            )
        if self.client_secret_file:
            path = Path(self.client_secret_file)
            try:
                self.client_secret = path.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"client_secret_file {path}: cannot be read ({exc.strerror})") from exc
        if self.issuer and not (self.authorize_url and self.token_url and self.userdata_url):
            self._apply_discovery(discover(self.issuer))  # at hub start, before anyone is served

    def _apply_discovery(self, doc):
        for trait, key in (
            ("authorize_url", "authorization_endpoint"),
            ("token_url", "token_endpoint"),
            ("userdata_url", "userinfo_endpoint"),
            ("logout_redirect_url", "end_session_endpoint"),
        ):
            if not getattr(self, trait) and doc.get(key):
                setattr(self, trait, doc[key])
        missing = [t for t in ("authorize_url", "token_url", "userdata_url") if not getattr(self, t)]
        if missing:
            raise ConfigError(f"the issuer {self.issuer} does not publish {', '.join(missing)}; set them in the config")

    # -- who is this, and what may they do ------------------------------------

    def user_info_to_username(self, user_info):
        value = (
            user_info.get(self.username_claim)
            if isinstance(self.username_claim, str)
            else self.username_claim(user_info)
        )
        try:
            return names.username_for(value, self.username_style, self.issuer.rstrip("/"), self.username_casefold)
        except names.UnusableName as exc:
            self.log.warning("Refusing a login: claim %s: %s", self.username_claim, exc)
            raise web.HTTPError(403, f"Your account cannot be used here: {exc}.")

    def grants_for(self, claims):
        return grants_from(claim_values(claims, self.groups_claim), self._rules)

    async def update_auth_model(self, auth_model):
        """Map the claims to course roles, tell the service, and decide admin rights (login and refresh)."""
        claims = (auth_model.get("auth_state") or {}).get(self.user_auth_state_key) or {}
        grants = self.grants_for(claims)
        auth_model["auth_state"]["aifhub_grants"] = grants.to_dict()
        if any(rule.role == "admin" for rule in self._rules):
            auth_model["admin"] = grants.admin or auth_model["name"] in self.admin_users
        # always told, also with no grants: what an earlier login granted and the claims no longer do is revoked
        try:
            profile = profile_of(claims, self.name_claim, self.email_claim)  # who the opaque name is
            await self.report_login(
                {"user": auth_model["name"], "source": "oidc", "grants": grants.to_dict(), "profile": profile}
            )
        except web.HTTPError:
            if not _REFRESHING.get():
                raise  # a login waits for its courses
            self.log.warning(
                "Kept %s's session although the service did not take the refreshed claims", auth_model["name"]
            )
        return auth_model

    async def refresh_user(self, user, handler=None, **kwargs):
        token = _REFRESHING.set(True)
        try:
            return await super().refresh_user(user, handler, **kwargs)
        finally:
            _REFRESHING.reset(token)

    async def check_allowed(self, username, auth_model):
        if await super().check_allowed(username, auth_model):
            return True
        if self.allow == "any":
            return True
        grants = (auth_model.get("auth_state") or {}).get("aifhub_grants") or {}
        return bool(grants.get("courses") or grants.get("admin"))
