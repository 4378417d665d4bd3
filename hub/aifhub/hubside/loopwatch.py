"""A watchdog for the hub's event loop: how long it goes without running its callbacks.

The hub is single-threaded: while one callback runs, every user waits. The loop stamps a heartbeat
every ``every`` seconds; a thread checks the stamp, and when the loop is late by more than
``threshold`` it logs what the loop's thread is doing (once per stall) and records the stall in a
Prometheus histogram (``aifhub_hub_loop_stall_seconds``, on the hub's ``/hub/metrics``).

One cause has no frame of its own: a garbage collection of the oldest generation walks every object
the hub holds while the loop waits. It is timed (``aifhub_hub_gc_pause_seconds``) and named in the
stall's report, and :func:`start_with_hub` moves what the hub holds once started (imports, the app,
its database objects) out of the collector's walk (``gc.freeze``): in a storm of 100 spawns, such
collections had stalled the loop for 0.2 s each.
"""

import asyncio
import gc
import logging
import sys
import threading
import time
import traceback
from collections import deque

from prometheus_client import Histogram

log = logging.getLogger(__name__)

STALLS = Histogram(
    "aifhub_hub_loop_stall_seconds",
    "Stalls of the hub's event loop longer than the watchdog's threshold",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
GC_PAUSES = Histogram(
    "aifhub_hub_gc_pause_seconds",
    "The hub's garbage collections of the oldest generation (they walk every object, the loop waiting)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)


class GcPauses:
    """A ``gc.callbacks`` entry timing the collections of the oldest generation."""

    def __init__(self, keep=64):
        self.recent = deque(maxlen=keep)  # [(monotonic end, seconds)], the last ``keep``
        self._started = None

    def __call__(self, phase, info):
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            seconds = time.perf_counter() - self._started
            self._started = None
            GC_PAUSES.observe(seconds)
            self.recent.append((time.monotonic(), seconds))

    def within(self, since, until):
        """Seconds of collection that ended between ``since`` and ``until`` (monotonic)."""
        return sum(s for end, s in self.recent if since <= end <= until)


class LoopWatch:
    def __init__(self, threshold=0.1, every=0.02, logger=None):
        self.threshold, self.every = threshold, every
        self.log = logger or log
        self.beat = time.monotonic()
        self.longest = 0.0
        self._loop = self._thread_id = None
        self.gc = GcPauses()

    def start(self, loop):
        self._loop, self._thread_id = loop, threading.get_ident()
        gc.callbacks.append(self.gc)
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
                    self._record(reported[1], self.beat - reported[0], self.gc.within(reported[0], self.beat))
                    reported = None
                continue
            if reported is None:  # a new stall: what is the loop doing?
                frame = sys._current_frames().get(self._thread_id)
                reported = (time.monotonic() - late, _where(frame))

    def _record(self, stack, seconds, collecting=0.0):
        self.longest = max(self.longest, seconds)
        STALLS.observe(seconds)
        level = logging.WARNING if seconds >= 0.25 else logging.INFO
        why = f" (a garbage collection took {collecting * 1000:.0f} ms of it)" if collecting else ""
        self.log.log(level, "The hub's event loop stalled %.0f ms%s; it was running:\n%s", seconds * 1000, why, stack)


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


def start_with_hub(settle_s=5.0, logger=None):
    """Called from the hub's configuration (its loop is running, the hub not yet started): hide what is
    loaded so far from the garbage collector now, and ``settle_s`` seconds later (the hub started) hide
    what it holds then and start the watchdog. Without a running loop (a configuration loaded outside
    a hub) it does nothing and returns False."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    gc.freeze()

    def settled():
        gc.freeze()
        ensure_watching(logger=logger)

    loop.call_later(settle_s, settled)
    return True
