"""What the service does when the hub stops it: nothing a sandbox ran is left uncharged.

JupyterHub's cleanup stops its managed services first and the single-user servers after them (while
its own API still answers), so a sandbox stopped by the hub's cleanup asks a service that is gone to
release it, and its session would be settled at its last charge on the next start. Two steps close
that gap:

* :func:`stop_sandboxes` (when the hub will stop the sandboxes anyway, JupyterHub's
  ``cleanup_servers``, as the embedded hub does): the service has the hub stop them first, while it
  still answers their release, so each session ends at its sandbox's real stop;
* :func:`last_pass`: one metering pass against the hub's list, so whatever still runs (a sandbox that
  outlives the hub, as on Kubernetes, or one slower to stop than the hub waits) is charged up to the
  service's own stop, and the next start goes on from there.
"""

import asyncio
import logging

from .hubapi import HubAPIError

log = logging.getLogger(__name__)


async def stop_sandboxes(hub, timeout, hurry, concurrency=8):
    """Ask the hub to stop every server it runs and wait (at most ``timeout`` seconds, or until
    ``hurry`` is set) for the stops. Returns the servers still running at the end."""
    try:
        running = await hub.running_servers()
    except HubAPIError as exc:
        log.warning("Cannot stop the sandboxes before exiting: %s", exc)
        return set()
    if not running:
        return set()
    log.info("Stopping %d sandbox(es) before the service exits, so that each is charged to its stop", len(running))
    limit = asyncio.Semaphore(concurrency)

    async def stop(user, server_name):  # the hub answers once the sandbox stopped (and was released)
        async with limit:
            try:
                await hub.stop_server(user, server_name)
            except HubAPIError as exc:
                log.warning("Could not stop %s's sandbox: %s", user, exc)

    stopping = asyncio.ensure_future(asyncio.gather(*(stop(u, n) for u, n in sorted(running))))
    hurried = asyncio.ensure_future(hurry.wait())
    await asyncio.wait([stopping, hurried], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for task in (stopping, hurried):
        task.cancel()
    await asyncio.gather(stopping, hurried, return_exceptions=True)
    try:
        left = running & await hub.running_servers()
    except HubAPIError:
        left = set()
    if left:
        log.warning("%d sandbox(es) had not stopped when the service exited; they are charged up to now", len(left))
    return left


async def last_pass(metering):
    """One metering pass before exiting (charges what runs up to now; best effort)."""
    try:
        await metering.meter()
    except HubAPIError as exc:
        log.warning("No last metering pass (the hub does not answer): %s", exc)
    except Exception:
        log.exception("The last metering pass failed")
