"""Sandboxes boot a few at a time, first come first served.

A Jupyter server spends its first seconds importing Python on a core. When everyone clicks
Start in the same minute, booting them all at once shares the cores out evenly, so everyone
waits as long as the last one, and the slowest exceed their timeouts. With a bounded number
booting at once, the first learners are ready in seconds, and everyone in the queue is told
their place while they wait.
"""

import asyncio
from collections import deque
from contextlib import asynccontextmanager


class StartQueue:
    """At most ``size`` holders at once; the others wait in arrival order."""

    def __init__(self, size):
        self.size = size
        self.active = 0
        self.waiting = deque()

    def ahead_of(self, ticket):
        return self.waiting.index(ticket) if ticket in self.waiting else 0

    @asynccontextmanager
    async def slot(self, report=None, every=2.0):
        """Hold a boot slot for the ``async with`` block; ``report(place, booting)`` is called every
        ``every`` seconds while waiting (``place``: 1 for the next in line)."""
        if self.active < self.size and not self.waiting:
            self.active += 1
        else:
            ticket = asyncio.get_running_loop().create_future()
            self.waiting.append(ticket)
            try:
                while not ticket.done():
                    if report is not None:
                        report(self.ahead_of(ticket) + 1, self.active)
                    await asyncio.wait([ticket], timeout=every)
            except BaseException:
                if ticket in self.waiting:
                    self.waiting.remove(ticket)
                elif ticket.done():  # handed a slot while being cancelled: pass it on
                    self._release()
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self):
        while self.waiting:
            ticket = self.waiting.popleft()
            if not ticket.done():
                ticket.set_result(True)  # the slot goes straight to the next in line
                return
        self.active -= 1


_QUEUES = {}


def start_queue(size):
    """The hub process's queue (one per size, which is one in practice)."""
    if size not in _QUEUES:
        _QUEUES[size] = StartQueue(size)
    return _QUEUES[size]
