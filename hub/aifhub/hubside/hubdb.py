"""The embedded hub's SQLite database, tuned for a hub whose commits run on its event loop.

JupyterHub commits synchronously on its single thread, so every fsync stalls every user: in a
storm of spawns, SQLite's default (a rollback journal, synced at each commit) stalled the loop
for hundreds of milliseconds at a time. Write-ahead logging with ``synchronous=NORMAL`` syncs at
checkpoints instead: a power cut may lose the last commits (servers the hub will find again, or
not, as after a crash), never the database.
"""

import sqlite3


class HubConnection(sqlite3.Connection):
    """A SQLite connection in WAL mode with ``synchronous=NORMAL`` (``connect_args={"factory": ...}``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.execute("PRAGMA journal_mode=WAL")
        self.execute("PRAGMA synchronous=NORMAL")


def db_kwargs():
    """``c.JupyterHub.db_kwargs`` for a SQLite hub database."""
    return {"connect_args": {"check_same_thread": False, "factory": HubConnection}}
