"""The one error aifhub raises for a request it will not grant.

``reason`` is a short label (``quota``, ``gpu-busy``, ``unknown-course``...) that callers branch on and that
the web layer alone turns into an HTTP status (:mod:`aifhub.service.statuses`); ``message`` is said so
that the person who asked understands what ran out or what is wrong, and what to do.
"""


class Refusal(Exception):
    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason
        self.message = message

    def to_dict(self):
        return {"reason": self.reason, "message": self.message}

    def __repr__(self):
        return f"Refusal({self.reason!r}, {self.message!r})"
