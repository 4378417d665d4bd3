"""What the hub's terminal shows: a refused spawn in one line, not three errors and a traceback, and the aifhub
service's routine reads of the hub's API at debug level.

JupyterHub logs a spawn refused in a spawner (a :class:`~jupyterhub.spawner.SpawnException`) three times, at
error level ("Not starting ...", "Error starting server ...", and "Failed to spawn single-user server with
form" with its traceback), and every API request at info level: the service's metering reads the hub's list of
running servers once a minute. The filter below sits on the hub's console handler (``c.JupyterHub.logging_config``)
and keeps the first line of a refusal, at info level; failures that are not refusals are left as they are.
"""

import logging
import re

from .refusal import MARK, SpawnRefusal

REFUSED = f": {MARK} ("
ROUTINE = re.compile(r"^2\d\d GET /hub/api/users\?\S*state=\S* \(aifhub@")  # the metering loop's read


class HubLogFilter(logging.Filter):
    """On the hub's console handler: ``level`` is that handler's (records lowered below it are dropped)."""

    def __init__(self, level="INFO"):
        super().__init__()
        self.level = logging.getLevelName(level) if isinstance(level, str) else level

    def _lower(self, record, level):
        if level < self.level:
            return False
        record.levelno, record.levelname = level, logging.getLevelName(level)
        return True

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, SpawnRefusal):  # "Failed to spawn single-user server with form", with a traceback
            return False
        if record.levelno >= logging.ERROR and REFUSED in (message := record.getMessage()):
            if message.startswith("Not starting "):
                return self._lower(record, logging.INFO)
            return False  # "Error starting server ...: refused (...)", the same refusal again
        if record.levelno == logging.INFO and ROUTINE.match(record.getMessage()):
            return self._lower(record, logging.DEBUG)
        return True


def logging_config(level):
    """For ``c.JupyterHub.logging_config``: the filter on the hub's console handler (traitlets merges this into its
    default logging configuration)."""
    return {
        "filters": {"aifhub": {"()": f"{__name__}.HubLogFilter", "level": level}},
        "handlers": {"console": {"filters": ["aifhub"]}},
    }
