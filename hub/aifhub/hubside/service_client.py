"""How the hub process reaches the aifhub service: non-blocking HTTP with the internal token."""

import json
from urllib.parse import urlencode

from jupyterhub.spawner import SpawnException
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from .refusal import SpawnRefusal


class ServiceClient:
    def __init__(self, url, token, timeout=15):
        self.url = url.rstrip("/") + "/"
        self.token = token
        self.timeout = timeout

    async def _call(self, method, path, body=None):
        req = HTTPRequest(
            self.url + path,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            body=None if body is None else json.dumps(body),
            request_timeout=self.timeout,
        )
        try:
            resp = await AsyncHTTPClient().fetch(req, raise_error=False)
        except OSError as exc:
            resp = None
            error = exc
        if resp is None or resp.code == 599:
            raise SpawnException(
                "The aifhub service cannot be reached, so no sandbox can be admitted right now. "
                "Please try again in a minute; if it persists, tell an administrator.",
                reason="service-unreachable",
                status_code=503,
                log_message=f"aifhub service {method} {path} failed: {getattr(resp, 'error', None) or error}",
            )
        try:
            data = json.loads(resp.body or b"{}")
        except ValueError:
            data = {}
        if resp.code >= 400:
            error = SpawnRefusal if resp.code < 500 else SpawnException  # a refusal by policy, or a failure
            raise error(
                data.get("message") or f"The aifhub service refused the request ({resp.code}).",
                reason=data.get("reason") or "refused",
                status_code=resp.code if resp.code < 500 or resp.code == 503 else 502,
            )
        return data

    async def offers(self, user, admin):
        return await self._call("GET", "api/v1/internal/offers?" + urlencode({"user": user, "admin": int(bool(admin))}))

    async def admit(self, user, server_name, course, admin):
        return await self._call("POST", "api/v1/internal/admit",
                                {"user": user, "server_name": server_name, "course": course, "admin": bool(admin)})

    async def release(self, user, server_name, reason):
        return await self._call("POST", "api/v1/internal/release",
                                {"user": user, "server_name": server_name, "reason": reason})

    async def users_created(self, users):
        return await self._call("POST", "api/v1/internal/users", {"users": list(users)})
