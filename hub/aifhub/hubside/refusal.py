"""The exception a refused spawn raises in the hub, shown to people as its message alone.

JupyterHub's pages show a spawn's exception as ``str(exc)``, which for a :class:`SpawnException` reads
"403 SpawnException(reason=not-enrolled): You are not enrolled ...", unless the exception carries
``jupyterhub_message``; its log lines carry ``str(exc)`` too.
"""

from jupyterhub.spawner import SpawnException

MARK = "refused"  # in str(): how the hub's log filter (.hub_logs) knows a refusal from a failure


class SpawnRefusal(SpawnException):
    """A spawn refused by policy (not enrolled, out of quota, no free GPU, a bad course id): the person reads the
    message; the hub's log gets one line, not an error with a traceback."""

    @property
    def jupyterhub_message(self):
        return self.message

    @property
    def jupyterhub_html_message(self):
        return self.message_html or None

    def __str__(self):
        return f"{MARK} ({self.reason}, {self.status_code}): {self.log_message}"
