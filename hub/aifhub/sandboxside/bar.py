"""A Jupyter server extension of the sandbox: the way from aifhub's JupyterLab bar to the aifhub service.

The bar (the ``aifhub-bar`` lab extension) asks ``<server>/aifhub/bar/<path>``; this handler forwards a short
list of the service's learner endpoints with the server's own token (``$JUPYTERHUB_API_TOKEN``, the learner's,
allowed to call the service: ``access:services!service=aifhub``) to ``$AIFHUB_EXCHANGE_URL`` (the service).

Why not the page's token: the token stays on the server (no page script, nor anything the page loads, ever holds
it), and the handler answers **the server's owner only**. A helper the learner let in reaches the same JupyterLab,
but their browser's calls here get 403: they cannot accept a request, end it or lower the hand in the learner's
name from the bar. (While the share lasts, a helper can run code as the learner, and so read that token from the
kernel's environment; JupyterHub's sharing grants that much: see docs/classroom.md.)
"""

import json
import os
import re
import time

from jupyter_server.base.handlers import APIHandler
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

COURSE = r"[a-z0-9-]+"
ALLOWED = [  # (method, path under api/v1/)
    ("GET", re.compile(r"me")),
    ("GET", re.compile(r"me/hands")),
    ("POST", re.compile(r"me/hands")),
    ("DELETE", re.compile(rf"me/hands/{COURSE}")),
    ("POST", re.compile(rf"me/hands/{COURSE}/(accept|end)")),
]


STARTED = time.time()


def allowed(method, path):
    return any(m == method and rx.fullmatch(path) for m, rx in ALLOWED)


class BarHandler(APIHandler):
    async def _forward(self, path):
        owner = os.environ.get("JUPYTERHUB_USER", "")
        if getattr(self.current_user, "username", None) != owner:
            raise web.HTTPError(403, "The aifhub bar answers the owner of this server only.")
        if path == "context" and self.request.method == "GET":  # what the sandbox knows of itself
            self.finish({"course": os.environ.get("AIFHUB_COURSE", ""), "user": owner, "started": STARTED})
            return
        if not allowed(self.request.method, path):
            raise web.HTTPError(404, f"The aifhub bar does not forward {self.request.method} {path}.")
        base = os.environ.get("AIFHUB_EXCHANGE_URL", "")
        if not base:
            raise web.HTTPError(503, "This sandbox does not know where the aifhub service is.")
        body = self.request.body if self.request.method == "POST" else None
        resp = await AsyncHTTPClient().fetch(
            HTTPRequest(
                base.rstrip("/") + "/api/v1/" + path,
                method=self.request.method,
                headers={
                    "Authorization": f"token {os.environ.get('JUPYTERHUB_API_TOKEN', '')}",
                    "Content-Type": "application/json",
                },
                body=body if body is not None else (b"" if self.request.method == "POST" else None),
                request_timeout=20,
                follow_redirects=False,
                allow_nonstandard_methods=True,
            ),
            raise_error=False,
        )
        self.set_status(resp.code if resp.code >= 200 else 502)
        self.set_header("Content-Type", "application/json")
        if resp.code < 200:  # no answer at all
            self.finish(json.dumps({"status": 502, "message": "The aifhub service did not answer."}))
            return
        self.finish(resp.body)

    @web.authenticated
    async def get(self, path):
        await self._forward(path)

    @web.authenticated
    async def post(self, path):
        await self._forward(path)

    @web.authenticated
    async def delete(self, path):
        await self._forward(path)


def _jupyter_server_extension_points():
    return [{"module": "aifhub.sandboxside.bar"}]


def _load_jupyter_server_extension(serverapp):
    base = serverapp.web_app.settings.get("base_url", "/")
    serverapp.web_app.add_handlers(".*$", [(base.rstrip("/") + "/aifhub/bar/(.*)", BarHandler)])
