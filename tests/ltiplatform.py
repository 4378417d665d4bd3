"""A real LTI 1.3 platform (an LMS's side) for the tests, built on the ``lti1p3platform`` library:
third-party initiated login, launches signed with the platform's key (RS256, served as JWKS), the
OAuth2 token endpoint (client-credentials grant with the tool's signed assertion, checked against the
tool's JWKS), AGS line items and scores, and NRPS memberships. What it receives (line items, scores)
is kept in a JSON file, so a restarted platform still knows it, and shown at ``/test/state``.

Run: ``python tests/ltiplatform.py CONFIG.json`` (see :class:`Platform` in the tests for the keys).
"""

import base64
import json
import sys
import threading
from pathlib import Path

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from lti1p3platform.ltiplatform import LTI1P3PlatformConfAbstract
from lti1p3platform.membership import Context
from lti1p3platform.message_launch import LTIAdvantageMessageLaunchAbstract
from lti1p3platform.oidc_login import OIDCLoginAbstract
from lti1p3platform.registration import Registration
from lti1p3platform.request import Request
from lti1p3platform.score import UpdateScoreStatus
from lti1p3platform.service_connector import AssignmentsGradesService, NamesRoleProvisioningService
from lti1p3platform.exceptions import LineItemNotFoundException
from tornado import ioloop, web

ROLE = "http://purl.imsglobal.org/vocab/lis/v2/membership#"


class Store:
    """Line items and every score received, in a JSON file (survives a restart)."""

    def __init__(self, path):
        self.path = Path(path)
        self.lock = threading.Lock()
        self.data = (
            json.loads(self.path.read_text()) if self.path.exists() else {"lineitems": {}, "scores": {}, "next": 1}
        )

    def save(self):
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)


class TornadoRequest(Request):
    def build_metadata(self, request):
        body = request.body or b""
        ctype = request.headers.get("Content-Type", "")
        return {
            "method": request.method,
            "form_data": {k: v[0].decode() for k, v in request.body_arguments.items()},
            "get_data": {k: v[0].decode() for k, v in request.query_arguments.items()},
            "headers": request.headers,
            "content_type": ctype,
            "path": request.path,
            "json": json.loads(body) if body and "json" in ctype else None,
        }


class PlatformConf(LTI1P3PlatformConfAbstract):
    def init_platform_config(self, settings, private_pem, public_pem):
        self.settings = settings
        self._registration = (
            Registration()
            .set_iss(settings["issuer"])
            .set_client_id(settings["client_id"])
            .set_deployment_id(settings["deployment_id"])
            .set_launch_url(settings["tool_launch_url"])
            .set_oidc_login_url(settings["tool_login_url"])
            .set_tool_key_set_url(settings["tool_jwks_url"])
            .set_platform_public_key(public_pem)
            .set_platform_private_key(private_pem)
        )

    def get_registration_by_params(self, **kwargs):
        return self._registration

    def get_tool_key_set(self):
        # the library fetches only https key sets; the tests' tool is on http://127.0.0.1
        return requests.get(self._registration.get_tool_key_set_url(), timeout=10).json()


class Login(OIDCLoginAbstract):
    def set_lti_message_hint(self, **kwargs):
        self._lti_message_hint = base64.urlsafe_b64encode(json.dumps(kwargs).encode()).decode()

    def get_redirect(self, url):
        return url


class Launch(LTIAdvantageMessageLaunchAbstract):
    def get_preflight_response(self):
        return self._request.get_data or self._request.form_data

    def render_launch_form(self, launch_data, **kwargs):
        return launch_data


class Grades(AssignmentsGradesService):
    store = None

    def _items(self):
        return list(self.store.data["lineitems"].values())

    def find_lineitems(self, page=1, limit=None, line_item_id=None, resource_link_id=None, resource_id=None, tag=None):
        items = [i for i in self._items() if resource_id in (None, i.get("resourceId")) and tag in (None, i.get("tag"))]
        return {"content": items, "has_next": False, "next": None}

    def find_lineitem(self, line_item_id):
        item = self.store.data["lineitems"].get(line_item_id)
        if item is None:
            raise LineItemNotFoundException()
        return item

    def create_lineitem(self, creation_data):
        with self.store.lock:
            n = self.store.data["next"]
            self.store.data["next"] = n + 1
            item = dict(creation_data, id=f"{self.ags.lineitems_url}/{n}")
            self.store.data["lineitems"][str(n)] = item
            self.store.save()
        return item

    def update_lineitem(self, update_data):
        raise LineItemNotFoundException()

    def delete_lineitem(self, line_item_id):
        raise LineItemNotFoundException()

    def update_score(self, line_item_id, score):
        self.find_lineitem(line_item_id)
        with self.store.lock:
            self.store.data["scores"].setdefault(line_item_id, []).append(score)
            self.store.save()
        return UpdateScoreStatus.SUCCESS

    def get_results(self, line_item_id, page=1, limit=None, user_id=None):
        return {"content": [], "has_next": False, "next": None}


class Members(NamesRoleProvisioningService):
    members = ()
    context = None

    def get_member_data_page(self, page=1, limit=None, role=None, since=None):
        wanted = {role, ROLE + role} if role else None  # NRPS: ?role= takes a full or a short context role
        content = [dict(m) for m in self.members if wanted is None or wanted & set(m["roles"])]
        return {"content": content, "has_next": False, "next": None}

    def get_context_by_id(self):
        return self.context


def respond(handler, resp):
    handler.set_status(resp.code)
    for key, value in (getattr(resp, "headers", None) or {}).items():
        handler.set_header(key, value)
    handler.set_header("Content-Type", resp.media_type)
    handler.finish(json.dumps(resp.result if resp.result is not None else {"message": resp.message}))


class Base(web.RequestHandler):
    def check_xsrf_cookie(self):
        return None

    @property
    def app(self):
        return self.application.settings["platform"]


class JWKS(Base):
    def get(self):
        self.finish(json.dumps(self.app.conf.get_jwks()))


class Start(Base):
    """A learner or instructor clicks the tool's link in the LMS course: third-party initiated login."""

    def get(self):
        login = Login(TornadoRequest(self.request), self.app.conf)
        custom = json.loads(self.get_argument("custom", "{}"))
        # deployment: the link of another deployment of the tool on this platform (one the tool was not told of)
        login.set_lti_message_hint(custom=custom, deployment=self.get_argument("deployment", ""))
        self.redirect(login.initiate_login(self.get_argument("user")))


class Authorize(Base):
    """The platform's OIDC authorisation endpoint: checks the tool's request, posts the signed launch back."""

    def get(self):
        req = TornadoRequest(self.request)
        query = req.get_data
        member = next((m for m in self.app.settings["members"] if m["user_id"] == query.get("login_hint")), None)
        if member is None:
            raise web.HTTPError(403, "unknown login_hint")
        hint = json.loads(base64.urlsafe_b64decode(query.get("lti_message_hint", "e30=")))
        custom = hint.get("custom") or {}
        registration = self.app.conf.get_registration_by_params()
        registration.set_deployment_id(hint.get("deployment") or self.app.settings["deployment_id"])
        launch = Launch(req, self.app.conf)
        ctx = self.app.settings["context"]
        launch.set_user_data(
            member["user_id"], member["roles"], full_name=member.get("name"), email_address=member.get("email")
        )
        launch.set_launch_context_claim(ctx["id"], context_title=ctx["title"], context_label=ctx["label"])
        launch.set_resource_link_claim("rl-" + (custom.get("assignment") or "course"))
        if custom:
            launch.set_custom_parameters_claim(custom)
        launch.set_ags(self.app.lineitems_url)
        launch.set_nrps(self.app.memberships_url)
        data = launch.lti_launch()
        self.finish(f"""<!DOCTYPE html><html lang="en"><head><title>Launching</title></head><body>
<form method="POST" action="{data["launch_url"]}" id="form">
<input type="hidden" name="id_token" value="{data["id_token"]}"><input type="hidden" name="state" value="{data["state"]}">
<button type="submit">Continue to the tool</button></form>
<script>document.getElementById("form").submit();</script></body></html>""")


class Token(Base):
    def post(self):
        data = TornadoRequest(self.request).form_data
        try:
            answer = self.app.conf.get_access_token(data)
        except Exception as exc:  # noqa: BLE001 - any refusal is the client's problem: 400, with why
            self.set_status(400)
            return self.finish({"error": "invalid_client", "error_description": f"{type(exc).__name__}: {exc}"})
        self.finish(answer)


class AGS(Base):
    def service(self):
        service = Grades(TornadoRequest(self.request), self.app.conf, self.app.lineitems_url)
        service.store = self.app.store
        return service

    def get(self, item=None):
        s = self.service()
        respond(
            self,
            s.handle_resp(s.handle_get_lineitem, line_item_id=item) if item else s.handle_resp(s.handle_get_lineitems),
        )

    def post(self, item=None, scores=None):
        s = self.service()
        if item and self.app.settings.get("refuse_scores"):
            self.set_status(403)
            return self.finish({"message": "this gradebook column is locked (the tests' switch)"})
        respond(
            self,
            s.handle_resp(s.handle_update_score, line_item_id=item)
            if item
            else s.handle_resp(s.handle_create_lineitem),
        )


class NRPS(Base):
    def get(self):
        s = Members(TornadoRequest(self.request), self.app.conf, self.app.memberships_url)
        ctx = self.app.settings["context"]
        s.members, s.context = (
            self.app.settings["members"],
            Context(id=ctx["id"], label=ctx["label"], title=ctx["title"]),
        )
        respond(self, s.handle_resp(s.handle_get_members))


class TestState(Base):
    """What the platform received; POST ``refuse_scores=1|0`` locks or unlocks the gradebook (403 to scores)."""

    def get(self):
        self.finish(json.dumps(self.app.store.data))

    def post(self):
        self.app.settings["refuse_scores"] = self.get_argument("refuse_scores", "0") == "1"
        self.finish({"refuse_scores": self.app.settings["refuse_scores"]})


class PlatformApp:
    def __init__(self, settings):
        self.settings = settings
        key_file = Path(settings["key_file"])
        if not key_file.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            key_file.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.conf = PlatformConf(settings=settings, private_pem=key_file.read_text(), public_pem=public.decode())
        self.store = Store(settings["state_file"])
        base = settings["issuer"]
        self.lineitems_url = f"{base}/ags/{settings['context']['id']}/lineitems"
        self.memberships_url = f"{base}/nrps/{settings['context']['id']}/memberships"

    def make_app(self):
        ctx = self.settings["context"]["id"]
        return web.Application(
            [
                (r"/jwks", JWKS),
                (r"/start", Start),
                (r"/auth", Authorize),
                (r"/token", Token),
                (rf"/ags/{ctx}/lineitems", AGS),
                (rf"/ags/{ctx}/lineitems/([0-9]+)", AGS),
                (rf"/ags/{ctx}/lineitems/([0-9]+)/(scores)", AGS),
                (rf"/nrps/{ctx}/memberships", NRPS),
                (r"/test/state", TestState),
            ],
            platform=self,
        )


def main(config_path):
    settings = json.loads(Path(config_path).read_text())
    app = PlatformApp(settings).make_app()
    app.listen(settings["port"], "127.0.0.1")
    print(f"platform listening on {settings['issuer']}", flush=True)
    ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main(sys.argv[1])
