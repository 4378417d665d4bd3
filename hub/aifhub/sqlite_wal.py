"""SQLite's write-ahead log, folded back into the database by a thread of its own.

Shared by the service's state database (:mod:`aifhub.state.db`) and the hub's own
(:mod:`aifhub.hubside.hubdb`), so it imports nothing but the standard library: the hub process loads
nothing of the service.
"""

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 2.0  # how long a checkpoint waits for another connection's lock before the next round


class Checkpointer:
    """Folds SQLite's write-ahead log back into the database from a thread of its own.

    Every ``interval_s``, a PASSIVE checkpoint: it copies what no reader still needs and never waits for,
    nor blocks, a writer or a reader; once a checkpoint has copied the whole log, the next writer starts
    the log again from its beginning. The WAL file is truncated back to nothing when the database is
    closed. Each process that opens a state ``Database`` runs one (the service, the CLI), and so does
    the hub for its own database (``aifhub.hubside.hubdb``); connections opened otherwise (``sqlite3``,
    alembic on its own) keep SQLite's auto-checkpoint.
    """

    def __init__(self, path, interval_s=0.5, busy_timeout_s=BUSY_TIMEOUT_S):
        self.path = str(path)
        self.interval_s, self.busy_timeout_s = interval_s, busy_timeout_s
        self.checkpoints = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="aifhub-sqlite-checkpoint", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _checkpoint(self, conn, mode="PASSIVE"):
        conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        self.checkpoints += 1

    def _loop(self):
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, check_same_thread=False)
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    self._checkpoint(conn)
                except sqlite3.Error as exc:  # busy or locked by a writer: the next round
                    log.debug("WAL checkpoint skipped: %s", exc)
            try:
                self._checkpoint(conn, "TRUNCATE")
            except sqlite3.Error as exc:
                log.info("WAL not truncated at close: %s", exc)
        finally:
            conn.close()

    def stop(self):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
