"""The CLI's way to the local state: a unit of work on the service's database (``$AIFHUB_DB_URL``, else the
SQLite file in ``--state-dir``); a change refuses while the service runs on it (it holds the database's lease)."""

import os
from pathlib import Path

from ..errors import Refusal
from ..service.statuses import is_bad_input
from ..state import lease
from ..state.db import Database, sqlite_url
from .common import CLIError


class ServiceRunning(Exception):
    def __init__(self, holder):
        super().__init__(holder)
        self.holder = holder


def _database(args):
    url = os.environ.get("AIFHUB_DB_URL")
    if url:
        return Database(url)
    path = Path(args.state_dir) / "aifhub.sqlite"
    if not path.exists():
        raise CLIError(f"no aifhub state in {args.state_dir} (run `aifhub up` once, or pass --state-dir or --url)")
    return Database(sqlite_url(path.resolve()))


def _local(args, action, write=False):
    """``action(session)`` on the local state; a change refuses while the service holds the database."""

    def unit(s):
        if write:
            holder = lease.live_holder(s)
            if holder:
                raise ServiceRunning(holder)
        return action(s)

    db = _database(args)
    try:
        return db.call(unit)
    except Refusal as refusal:
        raise CLIError(refusal.message, status=2 if is_bad_input(refusal.reason) else 1)
    finally:
        db.close()
