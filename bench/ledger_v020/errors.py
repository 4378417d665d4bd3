"""Errors the ledger raises, said so that a person understands them."""


class Refusal(Exception):
    """A request the service will not grant; ``message`` is for the person who asked."""

    def __init__(self, status, reason, message):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message

    def to_dict(self):
        return {"status": self.status, "reason": self.reason, "message": self.message}
