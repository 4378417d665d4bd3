"""Users the hub creates, told to the aifhub service, which puts them in their courses' groups.

JupyterHub drops a user's group memberships with the user, so a user deleted and created again (the same name
logging in once more, or added back by an admin) comes back in no group. JupyterHub calls no hook on every
creation whatever the authenticator (``Authenticator.add_user`` is each class's own method, and
``post_auth_hook`` runs before a new user exists), so the hub process watches its own database: when rows of
``users`` are inserted, their names go to the service's ``internal/users`` in one request, a moment later and
off the request that created them. Logins, the REST API, the admin page and the hub's start-up alike.
"""

import asyncio
import logging

from jupyterhub import orm
from jupyterhub.spawner import SpawnException
from sqlalchemy import event

from .service_client import ServiceClient

log = logging.getLogger(__name__)


class NewUserWatch:
    """Collects the names of users inserted into the hub's database and sends them to the service in batches."""

    installed = None

    def __init__(self, service_url, token, delay=0.5):
        self.service = ServiceClient(service_url, token)
        self.delay = delay
        self.pending = set()
        self.scheduled = False

    @classmethod
    def install(cls, service_url, token, delay=0.5):
        """Listen to the hub's ``users`` table (once per process; a second call points it at the new service)."""
        if cls.installed is None:
            cls.installed = cls(service_url, token, delay)
            event.listen(orm.User, "after_insert", cls.installed.inserted)
        else:
            cls.installed.service = ServiceClient(service_url, token)
        return cls.installed

    def inserted(self, _mapper, _connection, user):
        self.pending.add(user.name)
        if self.scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not in the hub's event loop: nothing to tell anyone
            return
        self.scheduled = True
        loop.call_later(self.delay, lambda: asyncio.ensure_future(self.send()))

    async def send(self):
        names, self.pending, self.scheduled = sorted(self.pending), set(), False
        try:
            answer = await self.service.users_created(names)
        except SpawnException as exc:  # the service is starting (it syncs every group then) or down
            log.info("The aifhub service did not take the new users %s: %s", ", ".join(names), exc.log_message)
            return
        for group, members in sorted((answer.get("added") or {}).items()):
            log.info("Recreated user(s) %s back in group %s", ", ".join(members), group)
