"""A watchdog for the hub's event loop: how long it goes without running its callbacks.

The hub is single-threaded: while one callback runs, every user waits. The loop stamps a heartbeat
every ``every`` seconds; a thread checks the stamp, and when the loop is late by more than
``threshold`` it logs what the loop's thread is doing (once per stall) and records the stall in a
Prometheus histogram (``aifhub_hub_loop_stall_seconds``, on the hub's ``/hub/metrics``).
"""

import asyncio
import logging
import sys
import threading
import time
import traceback

from prometheus_client import Histogram

log = logging.getLogger(__name__)

STALLS = Histogram(
    "aifhub_hub_loop_stall_seconds",
    "Stalls of the hub's event loop longer than the watchdog's threshold",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class LoopWatch:
    def __init__(self, threshold=0.1, every=0.02, logger=None):
        self.threshold, self.every = threshold, every
        self.log = logger or log
        self.beat = time.monotonic()
        self.longest = 0.0
        self._loop = self._thread_id = None

    def start(self, loop):
        self._loop, self._thread_id = loop, threading.get_ident()
        loop.call_soon(self._heartbeat)
        threading.Thread(target=self._watch, name="aifhub-loopwatch", daemon=True).start()

    def _heartbeat(self):
        self.beat = time.monotonic()
        self._loop.call_later(self.every, self._heartbeat)

    def _watch(self):
        reported = None
        while not self._loop.is_closed():
            time.sleep(self.every)
            late = time.monotonic() - self.beat - self.every
            if late <= self.threshold:
                if reported is not None:
                    self._record(reported[1], self.beat - reported[0])
                    reported = None
                continue
            if reported is None:  # a new stall: what is the loop doing?
                frame = sys._current_frames().get(self._thread_id)
                reported = (time.monotonic() - late, _where(frame))

    def _record(self, stack, seconds):
        self.longest = max(self.longest, seconds)
        STALLS.observe(seconds)
        level = logging.WARNING if seconds >= 0.25 else logging.INFO
        self.log.log(level, "The hub's event loop stalled %.0f ms; it was running:\n%s", seconds * 1000, stack)


def _where(frame):
    """The stalling callback's own frames (handlers, spawners) and the innermost few."""
    if frame is None:
        return "?"
    frames = traceback.extract_stack(frame)
    own = [f for f in frames[:-4] if any(k in f.filename for k in ("jupyterhub/", "aifhub/", "tornado/web.py"))]
    return "".join(traceback.format_list(own[-8:] + frames[-4:]))


_WATCH = None


def ensure_watching(threshold=0.1, logger=None):
    """Start the watchdog on the running loop, once per process."""
    global _WATCH
    if _WATCH is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        _WATCH = LoopWatch(threshold, logger=logger)
        _WATCH.start(loop)
    return _WATCH
