"""Quota warnings on the hub's own pages.

JupyterHub renders ``template_vars`` synchronously, so the warnings cannot be
fetched while a page renders: a background task polls the aifhub service and
the page reads the last answer.
"""

import asyncio
import html
import logging

from jupyterhub.spawner import SpawnException

from .service_client import ServiceClient

log = logging.getLogger(__name__)


class QuotaNotices:
    """A callable for ``c.JupyterHub.template_vars["announcement"]``: the base text plus the user's warning."""

    def __init__(self, base, service_url, token, interval=15):
        self.base = base
        self.client = ServiceClient(service_url, token, timeout=5)
        self.interval = interval
        self.notices = {}
        self._task = None

    async def _poll(self):
        while True:
            try:
                self.notices = (await self.client._call("GET", "api/v1/internal/notices"))["notices"]
            except SpawnException as exc:
                log.debug("Quota notices not available: %s", exc.log_message)
            await asyncio.sleep(self.interval)

    def __call__(self, user):
        if self._task is None:
            try:
                self._task = asyncio.get_running_loop().create_task(self._poll())
            except RuntimeError:
                pass
        notice = self.notices.get(getattr(user, "name", None)) if user else None
        # the hub renders the announcement as HTML: the notice is text (it holds a course's title)
        return self.base if not notice else f"{self.base} <strong>{html.escape(str(notice))}</strong>"
