"""The aifhub service in the tests' own process: its real tornado app, database and core, with the hub
replaced by what the service sees of it (its REST client and the token check).

Handler tests use this instead of a whole hub (``aifhub up``): no proxy, no JupyterHub, no sandboxes.
"""

import json
import secrets
import socket
from pathlib import Path
from urllib.parse import urlencode

from jupyterhub.services.auth import HubOAuth
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httpserver import HTTPServer

from aifhub.service.app import AifhubService
from aifhub.service.wiring import wire
from aifhub.state.db import sqlite_url

REPO = Path(__file__).resolve().parent.parent
PREFIX = "/services/aifhub/"
ACCESS_SCOPE = "access:services!service=aifhub"


class FakeHub:
    """What the service asks of the hub (:class:`aifhub.service.hubapi.HubClient`), kept in memory.

    ``running`` is the hub's list of running servers, which tests set; groups, users and stop requests
    are recorded.
    """

    def __init__(self):
        self.running = set()
        self.activity = {}  # (user, server) -> last activity, which tests set
        self.groups = {}
        self.users = set()
        self.stopped = []
        self.shares = set()  # (owner, server, user) the service shared
        self.revoked_tokens = []
        self.server_logins = {}  # (user, owner, server) -> tokens the user's browser got for that server

    async def wait_until_up(self):
        return None

    async def running_servers(self):
        return set(self.running)

    async def running_with_activity(self):
        return {key: self.activity.get(key) for key in self.running}

    async def ensure_users(self, names):
        self.users |= set(names)

    async def sync_group(self, group, members):
        await self.ensure_users(members)
        self.groups[group] = set(members)

    async def add_to_group(self, group, names):
        await self.ensure_users(names)
        self.groups.setdefault(group, set()).update(names)

    async def sync_groups(self, desired):
        for group, members in desired.items():
            await self.sync_group(group, members)

    async def remove_from_group(self, group, names):
        self.groups.get(group, set()).difference_update(names)

    async def user_groups(self, name):
        if name not in self.users:
            return None
        return {group for group, members in self.groups.items() if name in members}

    async def stop_server(self, user, server_name=""):
        self.stopped.append((user, server_name))
        self.running.discard((user, server_name))

    # JupyterHub's sharing of one server, and the tokens issued for it (the classroom's consented help)
    async def share_server(self, owner, server_name, user):
        self.shares.add((owner, server_name, user))
        return {"user": {"name": user}}

    async def unshare_server(self, owner, server_name, user):
        self.shares.discard((owner, server_name, user))

    async def server_tokens(self, user, owner, server_name):
        return list(self.server_logins.get((user, owner, server_name), []))

    async def revoke_server_tokens(self, user, owner, server_name):
        self.revoked_tokens.append((user, owner, server_name))
        return len(self.server_logins.pop((user, owner, server_name), []))


class FakeHubAuth(HubOAuth):
    """HubOAuth that identifies tokens from a table instead of asking the hub's API."""

    def __init__(self, **kw):
        super().__init__(
            api_token="service-token",
            oauth_client_id="service-aifhub",
            api_url="http://127.0.0.1:9/hub/api",
            hub_prefix="/hub/",
            base_url=PREFIX,
            access_scopes={ACCESS_SCOPE},
            **kw,
        )
        self.models = {}

    async def _check_hub_authorization(self, url, api_token, cache_key=None, use_cache=True):
        model = self.models.get(api_token)
        return None if model is None else json.loads(json.dumps(model))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class InProcessService:
    """The service's app on a loopback port of the running event loop, with a fake hub."""

    def __init__(self, folder, gpus="none", courses=None, demo=True, grading=True, **settings):
        self.folder = Path(folder)
        self.state = self.folder / "state"
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / "courses").mkdir(exist_ok=True)
        self.internal_token = secrets.token_hex(16)
        self.app_config = AifhubService(
            state_dir=str(self.state),
            courses_dir=str(courses or REPO / "courses"),
            internal_token=self.internal_token,
            isolated=False,
            gpus=gpus,
            db_url=sqlite_url(self.state / "aifhub.sqlite"),
            **settings,
        )
        self.hub = FakeHub()
        # the service's own composition root: the parts the service runs, connected as it connects them
        self.service = wire(self.app_config, self.hub, grading=grading, lti=False)
        self.db, self.core, self.grading = self.service.db, self.service.core, self.service.grading
        self.demo = demo
        self.auth = FakeHubAuth()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{PREFIX}"
        self.server = None
        self.http = AsyncHTTPClient()

    async def start(self):
        if self.demo:
            await self.core.seed_allocations(self.app_config.demo_allocations)
        await self.core.admission.record_rates()  # the GPU kinds' weights, as the service does at start
        app = self.app_config.make_app(self.core, self.grading, hub_auth=self.auth)
        self.server = HTTPServer(app, xheaders=True)
        self.server.listen(self.port, "127.0.0.1")
        return self

    async def stop(self):
        if self.server is not None:
            self.server.stop()
            await self.server.close_all_connections()
        await self.service.close()

    # -- who calls -----------------------------------------------------------

    def token(self, name, admin=False, scopes=None):
        """A token the fake hub knows for user ``name`` (an admin's carries the hub's admin scopes)."""
        token = secrets.token_hex(12)
        default = [ACCESS_SCOPE, "self"] + (["admin:users", "admin:servers"] if admin else [])
        self.auth.models[token] = {
            "kind": "user",
            "name": name,
            "admin": admin,
            "groups": [],
            "scopes": default if scopes is None else scopes,
        }
        return token

    # -- HTTP ----------------------------------------------------------------

    async def fetch(self, method, path, token=None, body=None, query=None, headers=None, raw=None):
        """``method path`` under the service's prefix; returns the response (any status) with ``.json()``."""
        url = self.url + path + (f"?{urlencode(query)}" if query else "")
        all_headers = {"Authorization": f"token {token}"} if token else {}
        all_headers.update(headers or {})
        if body is not None:
            all_headers.setdefault("Content-Type", "application/json")
            raw = json.dumps(body).encode()
        if raw is None and method in ("POST", "PUT", "PATCH"):
            raw = b""
        resp = await self.http.fetch(
            HTTPRequest(
                url,
                method=method,
                headers=all_headers,
                body=raw,
                follow_redirects=False,
                allow_nonstandard_methods=True,
                request_timeout=60,
            ),
            raise_error=False,
        )
        resp.json = lambda: json.loads(resp.body)
        return resp

    async def api(self, method, path, token=None, **kw):
        return await self.fetch(method, "api/v1/" + path, token=token, **kw)

    async def internal(self, method, path, body=None, query=None):
        """The endpoints the hub's spawner calls, with the internal token."""
        return await self.fetch(method, "api/v1/internal/" + path, token=self.internal_token, body=body, query=query)
