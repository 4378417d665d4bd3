"""The state database's gateway: units of work off the event loop, retried while another process holds
SQLite's write lock; the service's lease, which the CLI's offline writes respect."""

import asyncio
import json
import sqlite3
import sys
import threading
import time

import pytest
from ledgerkit import PG_URL, fresh_database
from sqlalchemy import func, select

from aifhub.cli.main import main
from aifhub.ledger import allocations
from aifhub.ledger.models import Allocation
from aifhub.state import lease
from aifhub.state.db import Database, sqlite_url

HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(0.6)
conn.execute("COMMIT")
"""
BACKENDS = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.skipif(not PG_URL, reason="AIFHUB_TEST_PG_URL not set")),
]


@pytest.fixture(params=BACKENDS)
def db(request, tmp_path):
    database = fresh_database(request.param, tmp_path)
    yield database
    database.close()


async def test_a_unit_of_work_runs_off_the_loop_in_its_own_transaction(db):
    loop_thread = threading.get_ident()

    def create(s, name):
        allocations.create(s, name, 1)
        return threading.get_ident()

    assert await db.run(create, "A-1") != loop_thread
    with pytest.raises(Exception, match="exists already"):
        await db.run(create, "A-1")
    assert await db.run(lambda s: s.scalar(select(func.count()).select_from(Allocation))) == 1


async def test_a_session_on_the_event_loop_is_refused(db):
    with pytest.raises(RuntimeError, match="await db.run"):
        with db.session():
            pass
    with pytest.raises(RuntimeError, match="await db.run"):
        db.call(lambda s: None)


def test_a_unit_that_fails_leaves_nothing(db):
    def half(s):
        allocations.create(s, "HALF", 1)
        raise ValueError("changed my mind")

    with pytest.raises(ValueError):
        db.call(half)
    assert db.call(lambda s: s.get(Allocation, "HALF")) is None


async def test_the_loop_keeps_answering_while_a_long_unit_runs(db):
    def slow(s):
        time.sleep(0.5)
        return "done"

    task = asyncio.ensure_future(db.run(slow))
    started = time.monotonic()
    ticks = 0
    while not task.done():
        await asyncio.sleep(0.01)
        ticks += 1
    assert task.result() == "done" and ticks >= 20 and time.monotonic() - started < 5


async def test_sqlite_busy_elsewhere_is_waited_out_and_retried(tmp_path):
    path = tmp_path / "busy.sqlite"
    db = Database(sqlite_url(path), busy_timeout_s=0.1)
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLD_LOCK, str(path), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert (await holder.stdout.readline()).strip() == b"locked"  # another process (the CLI, say) holds the lock
        started = time.monotonic()
        await db.run(allocations.create, "AFTER-LOCK", 2)
        assert time.monotonic() - started >= 0.4
        assert await db.run(lambda s: s.get(Allocation, "AFTER-LOCK").granted_gpu_ms) == 2 * 3_600_000
    finally:
        await asyncio.wait_for(holder.wait(), 30)
        db.close()


def test_sqlite_commits_leave_the_wal_to_the_checkpointer_which_truncates_it_at_close(tmp_path):
    path = tmp_path / "wal.sqlite"
    wal = tmp_path / "wal.sqlite-wal"
    db = Database(sqlite_url(path))
    assert db.call(lambda s: s.connection().exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()) == 0
    for i in range(300):  # 300 commits, each a page or more of the log
        db.call(allocations.create, f"WAL-{i}", 1)
    deadline = time.monotonic() + 10
    while db.checkpointer.checkpoints == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert db.checkpointer.checkpoints > 0, "the checkpointer never ran"
    assert wal.stat().st_size > 0
    db.close()
    assert not wal.exists() or wal.stat().st_size == 0, "the WAL was not truncated at close"
    conn = sqlite3.connect(path)  # everything is in the database file itself
    try:
        assert conn.execute("SELECT count(*) FROM allocations WHERE id LIKE 'WAL-%'").fetchone() == (300,)
    finally:
        conn.close()


def test_the_lease_is_fresh_while_renewed_and_gone_when_given_up(db):
    db.call(lease.renew, "host pid 1")
    assert db.call(lease.live_holder) == "host pid 1"
    db.call(lease.give_up, "someone else")
    assert db.call(lease.live_holder) == "host pid 1"
    db.call(lease.give_up, "host pid 1")
    assert db.call(lease.live_holder) is None


class CLIResult:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys, monkeypatch):
    """``aifhub ARGS`` in this process (the command's own main), without tokens in the environment."""
    monkeypatch.delenv("AIFHUB_TOKEN", raising=False)
    monkeypatch.delenv("AIFHUB_ADMIN_TOKEN", raising=False)

    def run(*args, state, env=None):
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        code = main([*args, "--state-dir", str(state)])
        out = capsys.readouterr()
        return CLIResult(code, out.out, out.err)

    return run


def test_offline_cli_writes_refuse_while_the_service_holds_the_database(tmp_path, cli):
    state = tmp_path / "state"
    state.mkdir()
    db = Database(sqlite_url(state / "aifhub.sqlite"))
    try:
        made = cli("alloc", "create", "OFFLINE-1", "--gpu-hours", "3", "--json", state=state)
        assert made.returncode == 0, made.stderr
        assert json.loads(made.stdout)["granted_gpu_hours"] == 3
        db.call(lease.renew, lease.me())
        refused = cli("alloc", "topup", "OFFLINE-1", "--gpu-hours", "1", state=state)
        assert refused.returncode == 1 and "owns its database" in refused.stderr and "--url" in refused.stderr
        shown = cli("alloc", "show", "OFFLINE-1", "--json", state=state)  # reading is fine
        assert shown.returncode == 0 and json.loads(shown.stdout)["granted_gpu_hours"] == 3
        db.call(lease.give_up, lease.me())
        again = cli("alloc", "topup", "OFFLINE-1", "--gpu-hours", "1", "--json", state=state)
        assert again.returncode == 0 and json.loads(again.stdout)["granted_gpu_hours"] == 4
    finally:
        db.close()


def test_offline_cli_honours_aifhub_db_url(tmp_path, cli):
    url = sqlite_url(tmp_path / "elsewhere.sqlite")
    made = cli(
        "alloc", "create", "ELSEWHERE", "--gpu-hours", "2", state=tmp_path / "no-state-here", env={"AIFHUB_DB_URL": url}
    )
    assert made.returncode == 0, made.stderr
    db = Database(url)
    try:
        assert db.call(lambda s: s.get(Allocation, "ELSEWHERE")) is not None
    finally:
        db.close()


def test_the_migrations_form_one_line():
    """Every migration follows exactly one other: branches that each add one must be chained when they land."""
    from alembic.script import ScriptDirectory

    from aifhub.state.db import alembic_config

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1, f"several heads: {script.get_heads()}"
    assert len(script.get_bases()) == 1, f"several bases: {script.get_bases()}"
