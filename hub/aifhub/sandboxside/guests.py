"""A Jupyter server extension of the sandbox: a helper's access ends the moment the learner ends it.

JupyterHub's sharing decides who may reach a learner's server, but the server itself remembers: it caches each
token's answer from the hub (``HubAuth.cache_max_age``, five minutes by default), and a websocket once opened
(a kernel, a terminal) is never checked again. So when the aifhub service revokes a helper's share it also calls
``POST <server>/aifhub/guests`` ``{"close": "<helper>"}``: the server forgets every cached answer (the next
request of anyone is checked with the hub again, so a new grant works at once and a revoked one is refused at
once) and closes the open websockets of that user. ``{"close": null}`` only forgets the cached answers (the
service's call after a grant).

Only the aifhub service may call it (its token reaches every server: ``access:servers`` in its role); the
learner and their guests get 403.
"""

import json
import weakref

from jupyter_server.base.handlers import JupyterHandler
from tornado import web
from tornado.websocket import WebSocketHandler

SERVICE = "aifhub"
_open = weakref.WeakSet()  # every open websocket handler of this server
_original_get = WebSocketHandler.get


async def _tracked_get(self, *args, **kwargs):
    _open.add(self)
    return await _original_get(self, *args, **kwargs)


def open_sockets_of(name):
    """The open websocket handlers whose user is ``name``."""
    out = []
    for handler in list(_open):
        user = getattr(handler, "current_user", None)
        if getattr(user, "username", None) == name and handler.ws_connection is not None:
            out.append(handler)
    return out


class GuestsHandler(JupyterHandler):
    @web.authenticated
    async def post(self):
        hub_user = getattr(self.current_user, "hub_user", None) or {}
        if hub_user.get("kind") != "service" or hub_user.get("name") != SERVICE:
            raise web.HTTPError(403, "Only the aifhub service may end guests' access.")
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, 'The body must be JSON: {"close": "<user>"}.')
        hub_auth = getattr(self.identity_provider, "hub_auth", None)
        if hub_auth is not None:
            hub_auth.cache.clear()  # every token is checked with the hub again on its next request
        closed = 0
        name = body.get("close") if isinstance(body, dict) else None
        if isinstance(name, str) and name and name != self.settings.get("user", None):
            for handler in open_sockets_of(name):
                handler.close(4403, "Your access to this server has ended.")
                closed += 1
        self.log.info("aifhub: guests' cached access forgotten; %d websocket(s) of %s closed", closed, name)
        self.finish({"closed": closed})

    def check_xsrf_cookie(self):
        return None  # token-authenticated calls of the service only


def _jupyter_server_extension_points():
    return [{"module": "aifhub.sandboxside.guests"}]


def _load_jupyter_server_extension(serverapp):
    WebSocketHandler.get = _tracked_get
    base = serverapp.web_app.settings.get("base_url", "/")
    serverapp.web_app.add_handlers(".*$", [(base.rstrip("/") + "/aifhub/guests", GuestsHandler)])
    serverapp.log.info("aifhub: guests' access can be ended at once (%saifhub/guests)", base)
