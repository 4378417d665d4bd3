"""The embedded hub's SQLite database, tuned for a hub whose commits run on its event loop.

JupyterHub commits synchronously on its single thread, so every fsync stalls every user: in a
storm of spawns, SQLite's default (a rollback journal, synced at each commit) stalled the loop
for hundreds of milliseconds at a time. Write-ahead logging with ``synchronous=NORMAL`` syncs at
checkpoints instead: a power cut may lose the last commits (servers the hub will find again, or
not, as after a crash), never the database. And the checkpoints (copying the log back into the
database, with its fsyncs) run on a thread of their own, as the service's do: the commit that
happened to fill the log no longer pays for them on the loop.
"""

import atexit
import sqlite3
import threading

from ..sqlite_wal import Checkpointer

_CHECKPOINTERS = {}  # database path -> Checkpointer, one per hub process
_LOCK = threading.Lock()


class HubConnection(sqlite3.Connection):
    """A SQLite connection in WAL mode with ``synchronous=NORMAL`` whose commits never checkpoint
    (``connect_args={"factory": ...}``); the first connection to a file starts its checkpointer."""

    def __init__(self, database, *args, **kwargs):
        super().__init__(database, *args, **kwargs)
        self.execute("PRAGMA journal_mode=WAL")
        self.execute("PRAGMA synchronous=NORMAL")
        if checkpoints_for(database) is not None:  # a thread checkpoints this file: commits need not
            self.execute("PRAGMA wal_autocheckpoint=0")


def checkpoints_for(database):
    """The :class:`Checkpointer` of the SQLite file ``database`` (started on first use; none in memory)."""
    path = str(database)
    if path in ("", ":memory:") or path.startswith("file:"):
        return None
    with _LOCK:
        if path not in _CHECKPOINTERS:
            _CHECKPOINTERS[path] = Checkpointer(path).start()
            atexit.register(_CHECKPOINTERS[path].stop)  # folds the log back in as the hub exits
        return _CHECKPOINTERS[path]


def db_kwargs():
    """``c.JupyterHub.db_kwargs`` for a SQLite hub database."""
    return {"connect_args": {"check_same_thread": False, "factory": HubConnection}}
