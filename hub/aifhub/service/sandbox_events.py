"""What happened inside learners' sandboxes that they must be told about (the kernel killed a
process for going over the memory limit, ...): kept for a while and shown as their notice."""

import time

MESSAGES = {
    "memory": (
        "Your sandbox for {title} went over its memory limit ({memory}): the process using the most "
        "memory (usually a notebook's kernel) was stopped. Restart the kernel and use less memory, "
        "for example smaller arrays or batches."
    ),
}
KINDS = tuple(MESSAGES)


class EventBoard:
    """``{user: (when, message)}``, the latest event of each learner, forgotten after ``keep_s``."""

    def __init__(self, keep_s=3600, clock=time.monotonic):
        self.keep_s = keep_s
        self.clock = clock
        self._latest = {}

    def add(self, user, kind, course):
        sandbox = course.sandbox
        message = MESSAGES[kind].format(title=course.title, memory=sandbox.memory or "none set")
        self._latest[user] = (self.clock(), message)
        return message

    def notices(self, user=None):
        now = self.clock()
        for name in [n for n, (at, _m) in self._latest.items() if now - at > self.keep_s]:
            del self._latest[name]
        return {n: m for n, (_at, m) in self._latest.items() if user is None or n == user}
