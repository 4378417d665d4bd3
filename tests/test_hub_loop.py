"""What keeps the hub's event loop answering in a storm: writes take turns, the collector's pauses are
timed and named, the hub's SQLite log is checkpointed off the loop. (The storms themselves are
`make bench`; the spawns through a real hub are in test_embedded_hub and test_waitlist.)"""

import asyncio
import gc
import logging
import sqlite3
import time
from types import SimpleNamespace

import pytest

from aifhub.hubside import hubdb, turns
from aifhub.hubside.loopwatch import GcPauses, LoopWatch


class _TurnCounter:
    """Counts the running loop's turns with a callback that re-arms itself once per turn."""

    def __init__(self):
        self.turns = 0
        self._loop = asyncio.get_running_loop()
        self._loop.call_soon(self._tick)

    def _tick(self):
        self.turns += 1
        self._loop.call_soon(self._tick)


async def _turns_taken(turnstile, n, cancel=()):
    """Start ``n`` callers at once; ``{caller: loop turn it got through on}``."""
    counter = _TurnCounter()
    got = {}

    async def caller(i):
        await turnstile.turn()
        got[i] = counter.turns

    tasks = [asyncio.create_task(caller(i)) for i in range(n)]
    await asyncio.sleep(0)  # every caller is waiting now
    for i in cancel:
        tasks[i].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return got


def test_writes_get_through_one_per_loop_turn_in_arrival_order():
    got = asyncio.run(_turns_taken(turns.Turnstile(), 6))
    assert sorted(got) == list(range(6))
    order = [got[i] for i in range(6)]
    assert order == sorted(order), f"not in arrival order: {got}"
    assert len(set(order)) == 6, f"two callers went through in the same turn: {got}"


def test_a_caller_that_went_away_does_not_hold_up_the_others():
    turnstile = turns.Turnstile()
    got = asyncio.run(_turns_taken(turnstile, 5, cancel=(1, 3)))
    assert sorted(got) == [0, 2, 4]
    assert len(turnstile) == 0


class _Handler:
    """Stands in for JupyterHub's BaseHandler: an async ``prepare`` and a request with a method."""

    prepared = 0

    def __init__(self, method):
        self.request = SimpleNamespace(method=method)

    async def prepare(self):
        type(self).prepared += 1
        return "prepared"


class _CountingTurnstile(turns.Turnstile):
    def __init__(self):
        super().__init__()
        self.turns = 0

    async def turn(self):
        self.turns += 1
        await super().turn()


@pytest.mark.parametrize(
    ("method", "waits"),
    [("POST", 1), ("DELETE", 1), ("PATCH", 1), ("PUT", 1), ("GET", 0), ("HEAD", 0), ("OPTIONS", 0)],
)
def test_only_requests_that_change_something_take_a_turn(method, waits):
    handler_class = type("Handler", (_Handler,), {})
    turnstile = _CountingTurnstile()
    turns.install(handler_class, turnstile)
    turns.install(handler_class, turnstile)  # idempotent: wrapped once
    assert asyncio.run(handler_class(method).prepare()) == "prepared"
    assert (turnstile.turns, handler_class.prepared) == (waits, 1)


def test_each_loop_has_its_own_turnstile():
    """A loop closed with callers waiting leaves nothing behind for the next one."""
    handler_class = type("Handler", (_Handler,), {})
    turns.install(handler_class)

    async def burst(n, leave_waiting=False):
        tasks = [asyncio.create_task(handler_class("POST").prepare()) for _ in range(n)]
        if leave_waiting:
            await asyncio.sleep(0)
            return turns.turnstile_for(asyncio.get_running_loop())
        return await asyncio.gather(*tasks)

    loop = asyncio.new_event_loop()
    first = loop.run_until_complete(burst(3, leave_waiting=True))
    loop.close()
    assert len(first) > 0  # still waiting when the loop closed
    assert asyncio.run(burst(4)) == ["prepared"] * 4
    assert asyncio.run(burst(2)) == ["prepared"] * 2


def test_the_hubs_handlers_are_the_ones_gated():
    from jupyterhub.apihandlers.base import APIHandler
    from jupyterhub.handlers.base import BaseHandler

    turns.install()
    assert BaseHandler.prepare.__aifhub_turns__ and APIHandler.prepare is BaseHandler.prepare


def test_full_collections_are_timed():
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    try:
        before = time.monotonic()
        gc.collect(1)  # a young generation: not counted
        assert not pauses.recent
        gc.collect()
    finally:
        gc.callbacks.remove(pauses)
    assert len(pauses.recent) == 1
    assert pauses.within(before, time.monotonic()) == pauses.recent[0][1] > 0
    assert pauses.within(time.monotonic() + 1, time.monotonic() + 2) == 0


def _block_the_loop(seconds):
    time.sleep(seconds)


def test_a_stall_is_logged_with_the_collection_that_caused_it(caplog):
    log = logging.getLogger("test-loopwatch")

    async def main():
        watch = LoopWatch(threshold=0.1, logger=log)
        watch.start(asyncio.get_running_loop())
        await asyncio.sleep(0.1)
        watch.gc.recent.append((time.monotonic() + 0.1, 0.12))  # as if a collection ended inside the stall
        _block_the_loop(0.3)
        await asyncio.sleep(0.2)  # the watchdog sees the loop back and reports
        return watch

    with caplog.at_level(logging.INFO, logger="test-loopwatch"):
        loop = asyncio.new_event_loop()
        try:
            watch = loop.run_until_complete(main())
        finally:
            loop.close()
        gc.callbacks.remove(watch.gc)
    assert 0.25 <= watch.longest < 1.0
    messages = [r.getMessage() for r in caplog.records]
    assert any("stalled" in m and "a garbage collection took 120 ms of it" in m for m in messages), messages
    assert any("test_hub_loop.py" in m for m in messages), "the report names what the loop was running"


def test_the_hub_database_is_checkpointed_off_its_commits(tmp_path):
    path = tmp_path / "jupyterhub.sqlite"
    conn = sqlite3.connect(path, factory=hubdb.HubConnection)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)  # commits never checkpoint
        conn.execute("CREATE TABLE t (x TEXT)")
        for _ in range(50):
            conn.execute("INSERT INTO t VALUES (?)", ("x" * 4000,))
            conn.commit()
        checkpointer = hubdb.checkpoints_for(path)
        assert checkpointer is hubdb.checkpoints_for(str(path))  # one per file
        deadline = time.monotonic() + 5
        while checkpointer.checkpoints < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert checkpointer.checkpoints >= 2
        busy, log_pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert (busy, log_pages) != (0, -1) and copied == log_pages  # everything is in the database
    finally:
        conn.close()
        hubdb.checkpoints_for(path).stop()
    assert sqlite3.connect(path).execute("SELECT count(*) FROM t").fetchone() == (50,)
    assert hubdb.checkpoints_for(":memory:") is None


class _Proxy:
    def __init__(self, routes):
        self.routes, self.checked = routes, []

    async def get_all_routes(self):
        return self.routes

    async def check_routes(self, users, services, routes):
        self.checked.append(routes)


def test_the_activity_sweep_gives_the_loop_turns_and_still_stamps_every_server():
    from datetime import datetime

    from jupyterhub import orm

    db = orm.new_session_factory("sqlite:///:memory:")()
    routes = {"/": {"data": {"hub": True}}}
    for i in range(35):
        user = orm.User(name=f"learner{i}")
        db.add(user)
        db.add(orm.Spawner(user=user, name=""))
        routes[f"/user/learner{i}/"] = {
            "data": {"user": f"learner{i}", "server_name": "", "last_activity": f"2026-12-04T10:{i:02d}:00Z"}
        }
    routes["/user/gone/"] = {"data": {"user": "gone", "server_name": "", "last_activity": "2026-12-04T10:00:00Z"}}
    db.commit()
    app = SimpleNamespace(proxy=_Proxy(routes), db=db, users={}, _service_map={}, log=logging.getLogger("test"))

    async def sweep():
        counter = _TurnCounter()
        await turns.update_last_activity_in_slices(app)
        return counter.turns

    assert asyncio.run(sweep()) >= 3  # 37 routes, a turn every 10
    for i in (0, 17, 34):
        user = orm.User.find(db, f"learner{i}")
        assert user.last_activity == datetime(2026, 12, 4, 10, i) == user.orm_spawners[""].last_activity
    assert app.proxy.checked == [routes]  # routes still reconciled with the proxy


def test_the_hub_runs_the_sliced_sweep():
    from jupyterhub.app import JupyterHub

    turns.install_sliced_activity_sweep()
    turns.install_sliced_activity_sweep()
    assert JupyterHub.update_last_activity.__aifhub_turns__


@pytest.mark.parametrize(
    ("version", "weight_file", "weight", "hub_weight"),
    [(1, "cpu.shares", "128", "8192"), (2, "cpu.weight", "12", "800")],
)
def test_sandboxes_weigh_an_eighth_of_a_process_against_the_hubs_eight(
    tmp_path, version, weight_file, weight, hub_weight
):
    """The hub gets a core at once while sandboxes boot; the sandboxes still share the cores as equals."""
    from aifhub.isolation.cgroups import HUB_CPU_WEIGHT, Cgroups, Limits

    parents = [tmp_path] if version == 2 else {c: tmp_path / c for c in ("memory", "cpu", "pids")}
    for d in [tmp_path] if version == 2 else parents.values():
        d.mkdir(exist_ok=True)
    group = Cgroups(version, parents).create("aifhub-test-uid1", Limits(memory_bytes=2**30, cpu=0.5, pids=64))
    cpu_dir = group.dirs[0] if version == 2 else group.dirs[1]
    assert (cpu_dir / weight_file).read_text() == weight
    per_process = 1024 if version == 1 else 100
    assert str(per_process * HUB_CPU_WEIGHT) == hub_weight  # what prioritise_hub writes for the hub's leaf
    quota = (cpu_dir / "cpu.max").read_text() if version == 2 else (cpu_dir / "cpu.cfs_quota_us").read_text()
    assert quota.split()[0] == "50000"  # the course's 0.5 CPU is a quota, not a weight
