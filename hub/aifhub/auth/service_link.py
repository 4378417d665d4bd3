"""The hub side's call to the aifhub service after a login: what the person's claims grant.

The service owns enrolments and instructor rights; the authenticators only tell it, once per
login, what the identity provider or the LMS said. A login waits for the answer (so the person's
courses are there when their home page opens) and fails with a clear message when the service
does not answer.
"""

import json

from tornado import web
from tornado.httpclient import HTTPRequest
from traitlets import Float, Unicode
from traitlets.config import Configurable

from ..hubside.service_client import http_client


class ServiceLink(Configurable):
    """Mixin for aifhub's authenticators: report a login's grants to the service."""

    aifhub_service_url = Unicode(
        help="URL of the aifhub service's prefix as the hub reaches it, e.g. "
        "http://127.0.0.1:10101/services/aifhub/ (aifhub's hub configuration sets it).",
    ).tag(config=True)
    aifhub_internal_token = Unicode(
        help="Secret the hub presents on the service's internal endpoints (aifhub's hub configuration sets it).",
    ).tag(config=True)
    aifhub_login_timeout = Float(
        20.0,
        help="Seconds a login waits for the aifhub service to record what the person's claims grant.",
    ).tag(config=True)

    async def report_login(self, body):
        """POST ``body`` to the service's ``internal/login``; returns its JSON answer."""
        if not self.aifhub_service_url:
            return {}
        req = HTTPRequest(
            self.aifhub_service_url.rstrip("/") + "/api/v1/internal/login",
            method="POST",
            headers={"Authorization": f"token {self.aifhub_internal_token}", "Content-Type": "application/json"},
            body=json.dumps(body),
            request_timeout=self.aifhub_login_timeout,
        )
        try:
            resp = await http_client().fetch(req, raise_error=False)  # the hub's client for the service
        except OSError as exc:
            self.log.error("aifhub service unreachable while logging in %s: %s", body.get("user"), exc)
            resp = None
        if resp is not None and resp.code in (400, 403, 404, 409):  # the service refuses this login, and says why
            try:
                message = json.loads(resp.body).get("message")
            except ValueError:
                message = None
            raise web.HTTPError(403, message or "aifhub refused this login.")
        if resp is None or resp.code != 200:
            if resp is not None:
                self.log.error(
                    "aifhub service refused the login of %s: %s %s", body.get("user"), resp.code, resp.body[:300]
                )
            raise web.HTTPError(
                503,
                "Your login worked, but aifhub could not record your courses just now. Please try again in a minute.",
            )
        return json.loads(resp.body)
