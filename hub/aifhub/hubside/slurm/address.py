"""The hub's endpoint where a Slurm job says where its single-user server listens.

``POST /hub/api/aifhub-slurm/address`` with ``{"server": name, "host": h, "port": p}``, authenticated with the
server's own API token (the one the hub gave this spawn). The address is handed to that spawn only: a token of
the same user for another server, a user's own API token, an admin's token, or a spawn that is not waiting
for an address get a 4xx and change nothing (unlike batchspawner's ``/hub/api/batchspawner``, where any token
of the user lands the port on whichever spawner is current: batchspawner#127).
"""

import hmac
import json
import re

from jupyterhub.apihandlers import default_handlers
from jupyterhub.apihandlers.base import APIHandler
from tornado import web

HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}$|^[0-9a-fA-F:]{2,39}$")
PATH = r"/api/aifhub-slurm/address"


class AddressHandler(APIHandler):
    async def post(self):
        user = self.current_user
        if user is None or getattr(user, "kind", None) != "user":
            raise web.HTTPError(403, "Only a Slurm sandbox's own server token may report its address.")
        try:
            body = json.loads(self.request.body or b"{}")
            server, host, port = body.get("server", ""), str(body["host"]), int(body["port"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise web.HTTPError(400, 'Send {"server": name, "host": address, "port": number}.') from exc
        if not isinstance(server, str) or not HOST.match(host) or not 0 < port < 65536:
            raise web.HTTPError(400, "Invalid server name, host or port.")
        spawner = user.spawners.get(server)  # a spawn in progress is there; .get never makes one
        token = self.get_auth_token() or ""
        own = getattr(spawner, "api_token", None) or ""
        if spawner is None or not own or not hmac.compare_digest(token.encode(), own.encode()):
            raise web.HTTPError(403, "This token does not belong to that server.")
        accept = getattr(spawner, "accept_address", None)
        if accept is None or not accept(host, port, body.get("job")):
            raise web.HTTPError(409, "That server is not waiting for an address.")
        self.set_status(204)


def register():
    """Add the endpoint to the hub's API (once; the hub builds its handlers after reading its config)."""
    if not any(h[0] == PATH for h in default_handlers):
        default_handlers.append((PATH, AddressHandler))


register()
