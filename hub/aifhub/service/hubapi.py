"""An async client for the JupyterHub REST API, as the service uses it."""

import asyncio
import json
from datetime import datetime
import logging
from urllib.parse import quote, urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

log = logging.getLogger(__name__)

PAGINATION = "application/jupyterhub-pagination+json"


def _when(text):
    """The hub's ISO timestamps (``...Z``) as aware datetimes."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class HubAPIError(Exception):
    pass


class HubClient:
    """Talks to ``/hub/api`` with the service's token; retries while the hub starts."""

    def __init__(self, api_url, token, timeout=20):
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.http = AsyncHTTPClient()

    async def request(self, method, path, body=None, *, ok=(200, 201, 204), accept="application/json"):
        req = HTTPRequest(
            f"{self.api_url}{path}",
            method=method,
            headers={"Authorization": f"token {self.token}", "Accept": accept, "Content-Type": "application/json"},
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=True,
            request_timeout=self.timeout,
        )
        try:
            resp = await self.http.fetch(req, raise_error=False)
        except (OSError, HTTPClientError) as exc:  # no answer: refused, or timed out
            raise HubAPIError(f"{method} {path}: hub not reachable ({exc})") from exc
        if resp.code not in ok:
            raise HubAPIError(f"{method} {path}: {resp.code} {resp.body[:300]!r}")
        return json.loads(resp.body) if resp.body else None

    async def wait_until_up(self, attempts=60, delay=0.5):
        for i in range(attempts):
            try:
                await self.request("GET", "/")
                return
            except (HubAPIError, HTTPClientError):
                await asyncio.sleep(min(delay * (1.5**i), 5))
        raise HubAPIError("the hub API did not answer")

    async def users(self, state=None):
        """All users (paginated), optionally only those with active servers."""
        offset, users = 0, []
        while True:
            query = {"offset": offset, "limit": 200}
            if state:
                query["state"] = state
            page = await self.request("GET", f"/users?{urlencode(query)}", accept=PAGINATION)
            users.extend(page["items"])
            nxt = page.get("_pagination", {}).get("next")
            if not nxt:
                return users
            offset = nxt["offset"]

    async def running_servers(self):
        """``{(user, server_name)}`` for every server the hub has started or is starting."""
        return set(await self.running_with_activity())

    async def running_with_activity(self):
        """``{(user, server_name): last activity (aware datetime, or None)}`` of every server started or starting."""
        running = {}
        for user in await self.users(state="active"):
            for name, server in (user.get("servers") or {}).items():
                running[(user["name"], name)] = _when((server or {}).get("last_activity"))
        return running

    async def ensure_users(self, names):
        """Create the users among ``names`` that the hub does not know (it answers 409 when it knows all)."""
        names = sorted(set(names))
        if names:
            await self.request("POST", "/users", {"usernames": names}, ok=(201, 409))

    async def sync_group(self, group, members):
        """Make ``group`` hold exactly ``members`` (creating the users and the group as needed)."""
        members = set(members)
        await self.ensure_users(members)
        path = f"/groups/{quote(group, safe='')}"
        try:
            current = set((await self.request("GET", path))["users"])
        except HubAPIError as exc:
            if " 404 " not in str(exc):
                raise
            await self.request("POST", path, {"users": sorted(members)})
            return
        if members - current:
            await self.request("POST", f"{path}/users", {"users": sorted(members - current)})
        if current - members:
            await self.request("DELETE", f"{path}/users", {"users": sorted(current - members)})

    async def add_to_group(self, group, names):
        """Add users the hub knows to ``group`` (one request; the group is created when missing)."""
        path = f"/groups/{quote(group, safe='')}"
        try:
            await self.request("POST", f"{path}/users", {"users": sorted(set(names))})
        except HubAPIError as exc:
            if " 404 " not in str(exc):
                raise
            await self.sync_group(group, names)

    async def remove_from_group(self, group, names):
        """Take ``names`` out of ``group`` (one request; nothing to do when the group or the users are gone)."""
        path = f"/groups/{quote(group, safe='')}/users"
        await self.request("DELETE", path, {"users": sorted(set(names))}, ok=(200, 400, 404))

    async def user_groups(self, name):
        """The groups the hub has ``name`` in (None when it does not know them)."""
        try:
            return set((await self.request("GET", f"/users/{quote(name, safe='')}"))["groups"])
        except HubAPIError as exc:
            if " 404 " not in str(exc):
                raise
            return None

    async def groups(self):
        """``{group: {members}}`` of every group of the hub (paginated)."""
        offset, groups = 0, {}
        while True:
            page = await self.request(
                "GET", f"/groups?{urlencode({'offset': offset, 'limit': 200})}", accept=PAGINATION
            )
            for g in page["items"]:
                groups[g["name"]] = set(g.get("users") or ())
            nxt = page.get("_pagination", {}).get("next")
            if not nxt:
                return groups
            offset = nxt["offset"]

    async def sync_groups(self, desired):
        """Make each group of ``desired`` (``{group: members}``) hold exactly its members, from one listing of the
        hub's groups: only the differences are sent, and users are created only when no group holds them yet."""
        current = await self.groups()
        known = set().union(*current.values()) if current else set()
        for group, members in sorted(desired.items()):
            members = set(members)
            have = current.get(group)
            missing = members - (have or set())
            if missing - known:
                await self.ensure_users(missing - known)
                known |= missing
            path = f"/groups/{quote(group, safe='')}"
            if have is None:
                await self.request("POST", path, {"users": sorted(members)})
                continue
            if missing:
                await self.request("POST", f"{path}/users", {"users": sorted(missing)})
            if have - members:
                await self.request("DELETE", f"{path}/users", {"users": sorted(have - members)})

    async def stop_server(self, user, server_name=""):
        path = f"/users/{quote(user, safe='')}/server"
        if server_name:
            path = f"/users/{quote(user, safe='')}/servers/{quote(server_name, safe='')}"
        await self.request("DELETE", path, ok=(202, 204, 400, 404))

    # -- sharing one server with one user (the classroom's consented help) -------------------------------

    async def share_server(self, owner, server_name, user):
        """Grant ``user`` access to ``owner``'s server ``server_name`` (JupyterHub's sharing API)."""
        path = f"/shares/{quote(owner, safe='')}/{quote(server_name, safe='')}"
        return await self.request("POST", path, {"user": user})

    async def unshare_server(self, owner, server_name, user):
        """Revoke ``user``'s share of that server (nothing to do when there is none, or the server is gone)."""
        path = f"/shares/{quote(owner, safe='')}/{quote(server_name, safe='')}"
        await self.request("PATCH", path, {"user": user}, ok=(200, 404))

    async def server_tokens(self, user, owner, server_name):
        """``user``'s tokens issued to ``owner``'s server ``server_name`` (its OAuth client): ``[{id, created,
        last_activity}]`` (none when the hub does not know the user)."""
        path = f"/users/{quote(user, safe='')}/tokens"
        try:
            listing = await self.request("GET", path)
        except HubAPIError as exc:
            if " 404 " in str(exc):
                return []
            raise
        # {"api_tokens": [...]} (older hubs also list "oauth_tokens"); OAuth tokens name their client
        tokens = [t for v in (listing or {}).values() if isinstance(v, list) for t in v if isinstance(t, dict)]
        return [t for t in tokens if server_oauth_client_matches(t.get("oauth_client") or "", owner, server_name)]

    async def revoke_server_tokens(self, user, owner, server_name):
        """Delete ``user``'s OAuth tokens issued to ``owner``'s server (its OAuth client): their browser's login to
        that server ends with them. Returns how many were deleted."""
        tokens = await self.server_tokens(user, owner, server_name)
        for token in tokens:
            path = f"/users/{quote(user, safe='')}/tokens/{quote(token['id'], safe='')}"
            await self.request("DELETE", path, ok=(200, 204, 404))
        return len(tokens)


def server_oauth_client_matches(client, owner, server_name):
    """Whether a token's ``oauth_client`` (the client's description, else its id) names ``owner``'s server
    ``server_name``. JupyterHub describes a server's client as ``Server at <base>user/<escaped owner>/[<server>/]``
    and names it ``jupyterhub-user-<quoted owner>[-<quoted server>]``."""
    path = f"/user/{quote(owner, safe='@~')}/" + (f"{server_name}/" if server_name else "")
    if client.startswith("Server at ") and client.endswith(path):
        return True
    return client == f"jupyterhub-user-{quote(owner)}" + (f"-{quote(server_name)}" if server_name else "")
