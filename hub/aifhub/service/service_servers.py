"""What the service itself runs and the ledger charges like the hub's servers, in one place.

The hub's list of running servers is the metering loop's truth for learners' sandboxes. Three kinds of
sessions run outside it: GPU grading jobs (admitted by :mod:`.admission`), warm sandboxes (:mod:`.warm_pool`)
and placeholder pods (:mod:`.placeholders`). Each writer adds its ``(user, server)`` keys to its own set on
one :class:`ServiceServers`, which the composition root (:mod:`.wiring`) makes and hands to the writers and to
the metering loop, its only reader.
"""


class ServiceServers:
    """``grading``: ``(aifhub-grader, server)`` of grading jobs holding GPUs; ``warm``: ``(aifhub-warm, server)``
    of warm sandboxes and running placeholders."""

    def __init__(self):
        self.grading = set()
        self.warm = set()

    def running(self):
        """Every server the service runs now (a copy: writers may change the sets while it is read)."""
        return set(self.grading) | set(self.warm)
