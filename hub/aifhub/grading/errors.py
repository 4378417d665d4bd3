"""Errors of the grading side, for the service's handlers and the CLI."""


class GradingError(Exception):
    """A refusal or failure with an HTTP status and a message for people."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message
