"""Handler bases: JupyterHub OAuth for people and tokens, JSON errors, the internal token."""

import hmac
import json

from jupyterhub.services.auth import HubOAuthenticated
from tornado import web
from tornado.log import app_log

from .. import texts
from ..errors import Refusal
from .statuses import status_of


def is_admin(model):
    """Admins: hub admins, and tokens carrying the hub's admin scopes (the admin token)."""
    return bool(model.get("admin")) or "admin:users" in set(model.get("scopes") or ())


class BaseHandler(HubOAuthenticated, web.RequestHandler):
    @property
    def hub_auth(self):
        """The application's HubOAuth (the tests' in-process service gives one that needs no hub)."""
        return self._hub_auth or self.settings["hub_auth"]

    @hub_auth.setter
    def hub_auth(self, auth):
        self._hub_auth = auth

    @property
    def core(self):
        return self.settings["aifhub_core"]

    @property
    def user_name(self):
        return self.current_user["name"]

    @property
    def admin(self):
        return is_admin(self.current_user)

    def require_admin(self):
        if not self.admin:
            raise web.HTTPError(403, "Only administrators may do this.")


class APIHandler(BaseHandler):
    """JSON in, JSON out, and errors as ``{status, message}``."""

    def get_login_url(self):
        # a script gets a JSON 403, not a redirect to the hub's login page
        raise web.HTTPError(403, "This API needs a JupyterHub token of yours: send 'Authorization: token <token>'.")

    def json_body(self):
        if not self.request.body:
            return {}
        try:
            body = json.loads(self.request.body)
        except (ValueError, UnicodeDecodeError):
            raise web.HTTPError(400, "The request body is not valid JSON.")
        if not isinstance(body, dict):
            raise web.HTTPError(400, "The request body must be a JSON object.")
        return body

    def write_json(self, data, status=200):
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, default=str))

    def log_exception(self, typ, value, tb):
        if isinstance(value, Refusal):  # a refusal or a reported failure, not a bug: one line, no traceback
            app_log.info(
                "%s %s: %s %s (%s)",
                self.request.method,
                self.request.path,
                status_of(value.reason),
                value.message,
                value.reason,
            )
            return
        super().log_exception(typ, value, tb)

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        body = {"status": status_code, "message": texts.message(message)}
        if isinstance(exc, Refusal):
            body = {"status": status_of(exc.reason), "reason": exc.reason, "message": texts.message(exc.message)}
            self.set_status(body["status"])
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def refuse(self, refusal):
        """Answer a :class:`~aifhub.errors.Refusal` as ``{status, reason, message}`` with its HTTP status."""
        status = status_of(refusal.reason)
        self.write_json(
            {"status": status, **refusal.to_dict(), "message": texts.message(refusal.message)}, status=status
        )

    def text_arguments(self, body, *names):
        """The fields ``names`` of a JSON body, each a string (or absent: ""); a 400 otherwise."""
        values = []
        for name in names:
            value = body.get(name, "")
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise web.HTTPError(400, f"The field '{name}' must be a string, got {texts.shown(value)}.")
            values.append(value)
        return values


class InternalHandler(APIHandler):
    """Calls from the hub process, authenticated by the internal token."""

    def get_current_user(self):
        return None

    def prepare(self):
        expected = self.settings["aifhub_internal_token"]
        header = self.request.headers.get("Authorization", "")
        given = header[len("token ") :] if header.startswith("token ") else ""
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            raise web.HTTPError(403, "This endpoint is for the hub only.")

    def check_xsrf_cookie(self):
        return None
