"""Requests that change something take turns on the hub's event loop: one starts per turn of the loop.

JupyterHub runs a request synchronously up to its first real wait. For a spawn that is about 13 ms
on one core: the token lookup, the user, the server's API token and OAuth client, and several commits.
When a workshop clicks Start in the same second, the POSTs are read in one turn of the loop, and the
loop runs all of their first parts back to back before it does anything else. 100 learners stalled it
for 1.6 s, and no one got an answer in that time, not even the health check.

A turnstile in front of those requests (every method but GET, HEAD and OPTIONS) lets one through
per turn. The hub does the same work in the same order, but between two spawns it serves whatever
else is waiting: progress events, pages, the health check. Reading requests never wait here.

The hub's own sweep of the proxy's routes (every ``JupyterHub.last_activity_interval``, for each
running server a query and an update of its last activity) ran in one go: 0.3 s with 100 servers
running. :func:`install_sliced_activity_sweep` gives the loop a turn after every few routes.

Both patch JupyterHub itself (``BaseHandler.prepare`` is wrapped, ``JupyterHub.update_last_activity`` is
replaced by a copy of 6.1's), so they are installed only on the JupyterHub releases they were read against
and tested with (:data:`TESTED_JUPYTERHUB`): on another one the hub refuses to start and says how to go on
(:func:`check_jupyterhub`). docs/embedded.md says what JupyterHub would need for the patches to go.
"""

import asyncio
import logging
import os
import weakref
from collections import deque
from datetime import timezone
from functools import wraps

from dateutil.parser import parse as parse_date
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version
from sqlalchemy.exc import SQLAlchemyError

from .service_entry import ConfigError

log = logging.getLogger(__name__)
UNGATED_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The JupyterHub releases whose BaseHandler.prepare and JupyterHub.update_last_activity these patches were
# read against and tested with (tests/test_hub_loop.py). Widen it only after reading both again in the new
# release; pyproject.toml pins the same range.
TESTED_JUPYTERHUB = SpecifierSet(">=6.1.1,<6.2")
UNTESTED_ENV = "AIFHUB_UNTESTED_JUPYTERHUB"  # set to the running version: patch it anyway


class UntestedJupyterHub(ConfigError):
    """The running JupyterHub is not one the patches were tested with; the message says how to go on."""


def check_jupyterhub(version=None):
    """Return the running JupyterHub's version when the patches were tested with it (or when
    ``$AIFHUB_UNTESTED_JUPYTERHUB`` names exactly this version); raise :class:`UntestedJupyterHub` otherwise."""
    if version is None:
        from jupyterhub import __version__ as version
    try:
        tested = Version(version) in TESTED_JUPYTERHUB
    except InvalidVersion:
        tested = False
    if tested:
        return version
    if os.environ.get(UNTESTED_ENV) == version:
        log.warning(
            "JupyterHub %s is not tested with aifhub (tested: %s); patching it anyway", version, TESTED_JUPYTERHUB
        )
        return version
    raise UntestedJupyterHub(
        f"aifhub patches JupyterHub's request handling (BaseHandler.prepare) and its activity sweep "
        f"(JupyterHub.update_last_activity), and was tested with JupyterHub {TESTED_JUPYTERHUB}; this is JupyterHub "
        f"{version}, so the hub does not start. Install a tested release (pip install 'jupyterhub{TESTED_JUPYTERHUB}'), "
        f"or, having checked that those two are unchanged in {version} (docs/embedded.md, 'Patching JupyterHub'), "
        f"start with {UNTESTED_ENV}={version} to patch it anyway."
    )


class Turnstile:
    """``await turnstile.turn()`` returns after the callers ahead of it, one per turn of the loop (one
    loop: see :func:`turnstile_for`)."""

    def __init__(self):
        self._waiting = deque()
        self._releasing = False

    def __len__(self):
        return len(self._waiting)

    async def turn(self):
        loop = asyncio.get_running_loop()
        ticket = loop.create_future()
        self._waiting.append(ticket)
        if not self._releasing:
            self._releasing = True
            loop.call_soon(self._release, loop)
        await ticket

    def _release(self, loop):
        """Let the next live caller through; the one after it goes in the next turn."""
        while self._waiting:
            ticket = self._waiting.popleft()
            if not ticket.done():  # a caller that went away (client closed) is skipped
                ticket.set_result(None)
                break
        if self._waiting:
            loop.call_soon(self._release, loop)
        else:
            self._releasing = False


_TURNSTILES = weakref.WeakKeyDictionary()


def turnstile_for(loop):
    """The turnstile of ``loop`` (the hub has one loop; a test process may run several in turn)."""
    if loop not in _TURNSTILES:
        _TURNSTILES[loop] = Turnstile()
    return _TURNSTILES[loop]


def install(handler_class=None, turnstile=None):
    """Put a turnstile (default: the running loop's) in front of the requests of ``handler_class``
    (JupyterHub's ``BaseHandler``, the base of all its pages and API handlers) that change something.
    Idempotent; returns the class."""
    if handler_class is None:
        from jupyterhub.handlers.base import BaseHandler as handler_class
    prepare = handler_class.prepare
    if getattr(prepare, "__aifhub_turns__", False):
        return handler_class

    @wraps(prepare)
    async def prepare_in_turn(self):
        if self.request.method not in UNGATED_METHODS:
            await (turnstile if turnstile is not None else turnstile_for(asyncio.get_running_loop())).turn()
        return await prepare(self)

    prepare_in_turn.__aifhub_turns__ = True
    handler_class.prepare = prepare_in_turn
    return handler_class


ROUTES_PER_TURN = 10


async def update_last_activity_in_slices(app):
    """JupyterHub 6.1's ``JupyterHub.update_last_activity``, giving the loop a turn after every
    ``ROUTES_PER_TURN`` routes (the hub's one database session may commit in between: these are
    last-activity stamps only)."""
    from jupyterhub import orm

    routes = await app.proxy.get_all_routes()
    for i, route in enumerate(routes.values()):
        if i % ROUTES_PER_TURN == ROUTES_PER_TURN - 1:
            await asyncio.sleep(0)
        data = route["data"]
        if "user" not in data or "server_name" not in data or "last_activity" not in data:
            continue  # not a user's server, or a proxy that does not say
        user = orm.User.find(app.db, data["user"])
        spawner = user.orm_spawners.get(data["server_name"]) if user is not None else None
        if spawner is None:
            app.log.warning("Found no user or server for route: %s", route)
            continue
        dt = parse_date(data["last_activity"])
        if dt.tzinfo:  # naive UTC, as the database holds it
            dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
        user.last_activity = max(user.last_activity, dt) if user.last_activity else dt
        spawner.last_activity = max(spawner.last_activity, dt) if spawner.last_activity else dt
    try:
        app.db.commit()
    except SQLAlchemyError:
        app.log.exception("Rolling back session due to database error")
        app.db.rollback()
        return
    await app.proxy.check_routes(app.users, app._service_map, routes)


def install_sliced_activity_sweep(app_class=None):
    """Replace ``app_class.update_last_activity`` (JupyterHub's app) with
    :func:`update_last_activity_in_slices`. Idempotent; returns the class."""
    if app_class is None:
        from jupyterhub.app import JupyterHub as app_class
    if not getattr(app_class.update_last_activity, "__aifhub_turns__", False):

        async def update_last_activity(self):
            await update_last_activity_in_slices(self)

        update_last_activity.__aifhub_turns__ = True
        update_last_activity.__doc__ = update_last_activity_in_slices.__doc__
        app_class.update_last_activity = update_last_activity
    return app_class


def install_all(version=None):
    """Both: requests that change something take turns, and the activity sweep goes in slices; on a JupyterHub
    they were tested with only (raises :class:`UntestedJupyterHub`, a ConfigError, before patching anything)."""
    check_jupyterhub(version)
    install()
    install_sliced_activity_sweep()
