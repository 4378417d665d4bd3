"""The state database: engine, migrations (alembic), and the one way the service's coroutines reach it.

The service is one event loop: a query run on it stalls every request and the metering loop. So its
code never opens a session there; it hands a *unit of work* (a function of a session) to
:meth:`Database.run`, which runs it in a transaction of its own on the database's thread (one writer
thread for SQLite, which allows one writer at a time anyway; a small pool for PostgreSQL) and retries
it when the database is busy (another process holds SQLite's write lock; a PostgreSQL serialization
failure or deadlock). A unit of work must therefore only touch the database: no HTTP, no files, no
sleeping, as it may run twice.

Code off the event loop (the CLI, worker threads, tests) may use :meth:`Database.call` (the same unit of
work, synchronously) or :meth:`Database.session`.

SQLite's write-ahead log is folded back into the database by a :class:`Checkpointer` thread of the
service's own, not by whichever commit happens to cross SQLite's threshold: an admission is never the
unit of work that pays for copying the last thousand pages (that was most of its p99).
"""

import asyncio
import logging
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from ..sqlite_wal import Checkpointer

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 2.0  # how long SQLite waits for another process's write lock before a unit of work is retried
RETRIES = 8  # attempts of a unit of work on a busy database (with backoff: about 15 s in all)
PG_RETRY_STATES = ("40001", "40P01")  # serialization failure, deadlock detected


def sqlite_url(path):
    return f"sqlite:///{path}"


def is_sqlite(url):
    return str(url).startswith("sqlite")


SQLITE_CACHE_KIB = 64 * 1024


def make_engine(url, busy_timeout_s=BUSY_TIMEOUT_S, autocheckpoint=True):
    """An engine; SQLite gets WAL, foreign keys, a short busy timeout, and write transactions that take
    the lock when they begin. ``autocheckpoint=False``: commits never checkpoint the WAL (a
    :class:`Checkpointer` does)."""
    if is_sqlite(url):
        engine = create_engine(url, connect_args={"timeout": busy_timeout_s, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # transactions are begun below, not by the driver
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            # a workshop's tick reads and writes every running session: keep its pages in memory (the default
            # cache is 2 MiB; this is at most 64 MiB per connection, allocated as used)
            cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            if not autocheckpoint:
                cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn):
            # take the write lock at the start: checks and the writes they allow cannot interleave
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


def alembic_config(url):
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("aifhub.state").joinpath("migrations")))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine):
    """Bring the schema to the newest migration (idempotent)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def is_busy(exc):
    """Whether ``exc`` means "try again": SQLite's lock held elsewhere, or a PostgreSQL conflict."""
    if not isinstance(exc, OperationalError):
        return False
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        return getattr(orig, "sqlite_errorcode", None) in (
            sqlite3.SQLITE_BUSY,
            sqlite3.SQLITE_LOCKED,
        ) or "database is locked" in str(orig)
    return getattr(orig, "sqlstate", None) in PG_RETRY_STATES


def _on_event_loop():
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Database:
    """The state database: an engine, migrated on open, and units of work run off the event loop."""

    def __init__(self, url, pool_size=4, busy_timeout_s=BUSY_TIMEOUT_S, retries=RETRIES, checkpointer=True):
        self.url = url
        sqlite_path = make_url(url).database if is_sqlite(url) else None
        own_checkpoints = bool(checkpointer and sqlite_path and sqlite_path != ":memory:")
        self.engine = make_engine(url, busy_timeout_s, autocheckpoint=not own_checkpoints)
        upgrade(self.engine)
        self.checkpointer = Checkpointer(sqlite_path).start() if own_checkpoints else None
        self.retries = retries
        self._sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self.threads = 1 if is_sqlite(url) else pool_size
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="aifhub-state")
        self._local = threading.local()

    @property
    def dialect(self):
        return self.engine.dialect.name

    @contextmanager
    def session(self):
        """A transaction: commits on success, rolls back on error. Not on the event loop: use :meth:`run`."""
        if _on_event_loop():
            raise RuntimeError(
                "A database session opened on the event loop would stall it: "
                "use `await db.run(unit, ...)` with a function of the session."
            )
        with self._sessionmaker() as s, s.begin():
            yield s

    def _unit(self, fn, args, kwargs):
        """``fn(session, *args, **kwargs)`` in a transaction of its own, retried while the database is busy."""
        delay = 0.01
        for attempt in range(1, self.retries + 1):
            try:
                with self._sessionmaker() as s, s.begin():
                    return fn(s, *args, **kwargs)
            except OperationalError as exc:
                if not is_busy(exc) or attempt == self.retries:
                    raise
                log.info(
                    "State database busy (%s); retrying %s in %.2f s", exc.orig, getattr(fn, "__name__", fn), delay
                )
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _in_thread(self, fn, args, kwargs):
        self._local.inside = True
        try:
            return self._unit(fn, args, kwargs)
        finally:
            self._local.inside = False

    async def run(self, fn, /, *args, **kwargs):
        """Run the unit of work ``fn(session, *args, **kwargs)`` on the database's thread; returns its result
        (or raises its exception, after rolling it back)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(self._in_thread, fn, args, kwargs))

    def call(self, fn, /, *args, **kwargs):
        """:meth:`run` for code off the event loop (threads, the CLI): waits for the result."""
        if _on_event_loop():
            raise RuntimeError("Database.call() would block the event loop: use `await db.run(...)`.")
        if getattr(self._local, "inside", False):
            raise RuntimeError("A unit of work called Database.call(): pass its session to the inner function instead.")
        return self._executor.submit(self._in_thread, fn, args, kwargs).result()

    def close(self):
        self._executor.shutdown(wait=True)
        self.engine.dispose()
        if self.checkpointer is not None:
            self.checkpointer.stop()
