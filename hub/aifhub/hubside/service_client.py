"""How the hub process reaches the aifhub service: non-blocking HTTP with the internal token."""

import asyncio
import json
from urllib.parse import urlencode

from jupyterhub.spawner import SpawnException
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from .refusal import SpawnRefusal


# Requests the hub has open to the service at once. Tornado's shared client allows 10 and counts the time a
# request waits for one of them against its timeout, so a workshop's 100 simultaneous spawns failed with
# "Timeout in request queue"; past this many they wait (the service runs its units of work in turn anyway).
MAX_CONNECTIONS = 128
_clients = {}  # event loop -> the hub's client for the service


def http_client():
    """The hub's HTTP client for the service, one per event loop."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = AsyncHTTPClient(force_instance=True, max_clients=MAX_CONNECTIONS)
    return client


class ServiceClient:
    def __init__(self, url, token, timeout=15):
        self.url = url.rstrip("/") + "/"
        self.token = token
        self.timeout = timeout

    async def _call(self, method, path, body=None, timeout=None):
        req = HTTPRequest(
            self.url + path,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            body=None if body is None else json.dumps(body),
            request_timeout=timeout or self.timeout,
        )
        try:
            resp = await http_client().fetch(req, raise_error=False)
        except (OSError, HTTPClientError) as exc:  # no answer: refused, timed out (curl's client raises those too)
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

    async def admit(self, user, server_name, course, admin, warm=False, pending=False):
        return await self._call(
            "POST",
            "api/v1/internal/admit",
            {
                "user": user,
                "server_name": server_name,
                "course": course,
                "admin": bool(admin),
                "warm": bool(warm),
                "pending": bool(pending),
            },
        )

    async def running(self, user, server_name, pod=None):
        body = {"user": user, "server_name": server_name}
        if pod:
            body["pod"] = pod  # namespace/name: the DCGM exporter's GPU readings of this pod are the session's
        return await self._call("POST", "api/v1/internal/running", body)

    async def release(self, user, server_name, reason):
        return await self._call(
            "POST", "api/v1/internal/release", {"user": user, "server_name": server_name, "reason": reason}
        )

    async def queue_status(self, user, course, status):
        """Where ``user``'s sandbox of ``course`` waits in the scheduler's queue (None: it no longer waits)."""
        return await self._call("POST", "api/v1/internal/queue", {"user": user, "course": course, "status": status})

    async def sandbox_event(self, user, course, kind):
        return await self._call("POST", "api/v1/internal/sandbox-event", {"user": user, "course": course, "kind": kind})

    async def wait_in_line(self, entry_id, wait=10):
        """The waitlist entry once it changes (or after ``wait`` seconds): ``{state, position, estimate_s, ...}``."""
        data = await self._call("GET", f"api/v1/internal/waitlist/{int(entry_id)}?wait={wait:g}", timeout=wait + 15)
        return data["entry"]

    async def leave_waitlist(self, user, entry_id):
        return await self._call("DELETE", f"api/v1/internal/waitlist/{int(entry_id)}?" + urlencode({"user": user}))

    async def hand_over(self, warm_id, assignment):
        """Make the warm sandbox ``warm_id`` (taken at admission) the learner's: ``{"pid", "cgroup", "devices"}``."""
        return await self._call("POST", f"api/v1/internal/warm/{int(warm_id)}/handover", assignment)

    async def users_created(self, users):
        return await self._call("POST", "api/v1/internal/users", {"users": list(users)})
