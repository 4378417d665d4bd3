"""Ledger benchmarks, in process on the service's real database code, against the ledger of aifhub 0.2.0
(``bench/ledger_v020``) measured in the same run on the same kind of database (SQLite in a scratch folder;
PostgreSQL too when a server is at hand).

- Admission latency (p50, p99): one admission as the service runs it now (a unit of work on the state
  database's thread, awaited from the event loop), against 0.2.0's admission (run as 0.2.0 did, in a
  session on the loop), alternating, each on a database of its own; into an empty allocation, and into one
  that 10,000 running sessions already draw on.
- One metering tick over N running sessions (every one charged, every limit checked), now and in 0.2.0.
- The longest stall of the event loop while a tick over N sessions runs: now the tick runs on the state
  database's thread; 0.2.0 ran it on the loop. A probe coroutine that wakes every 5 ms measures how late
  it wakes.
"""

import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import create_engine, insert, text

from aifhub.catalog.loader import Catalog
from aifhub.catalog.model import Course, GpuRequest, LearnerQuota, SandboxRequest, Schedule
from aifhub.ledger import admission, allocations, metering
from aifhub.ledger.models import SandboxSession
from aifhub.state.db import Database, sqlite_url

from .ledger_v020 import metering as v020_metering
from .ledger_v020 import sandboxes as v020_sandboxes

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=timezone.utc)
REPO = Path(__file__).resolve().parent.parent
SIDES = {"now": (admission.admit, metering.tick), "0.2.0": (v020_sandboxes.admit, v020_metering.tick)}


def _course():
    return Course(
        id="bench",
        title="Bench",
        kind="workshop",
        enrollment="open",
        instructors=("t",),
        sandbox=SandboxRequest(image="pytorch-cuda", gpu=GpuRequest("gpu", 1), cpu=2, max_session="1h"),
        path=Path("."),
        schedule=Schedule(start=date(2026, 1, 1)),
        allocation="BENCH",
        quota=LearnerQuota(window="week", gpu_hours=10),
    )


class Backend:
    """Fresh databases of one kind: SQLite files in a folder, or schemas of a PostgreSQL database."""

    def __init__(self, kind, folder=None, pg_url=None):
        self.kind, self.folder, self.pg_url = kind, Path(folder) if folder else None, pg_url
        self.schemas = []

    def database(self, name):
        if self.kind == "sqlite":
            self.folder.mkdir(parents=True, exist_ok=True)
            db = Database(sqlite_url(self.folder / f"{name}-{uuid.uuid4().hex[:6]}.sqlite"))
        else:
            schema = "bench_" + re.sub(r"[^a-z0-9]+", "_", name.lower()) + f"_{uuid.uuid4().hex[:8]}"
            self._admin(f"CREATE SCHEMA {schema}")
            self.schemas.append(schema)
            sep = "&" if "?" in self.pg_url else "?"
            db = Database(f"{self.pg_url}{sep}options=-csearch_path%3D{schema}")
        db.call(allocations.create, "BENCH", 10**9, title="bench")
        return db

    def _admin(self, sql):
        engine = create_engine(self.pg_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(sql))
        finally:
            engine.dispose()

    def cleanup(self):
        for schema in self.schemas:
            self._admin(f"DROP SCHEMA {schema} CASCADE")
        self.schemas = []


def postgres_url():
    """A PostgreSQL server for the benchmarks: $AIFHUB_BENCH_PG_URL or $AIFHUB_TEST_PG_URL, else the test
    server of ``scripts/test-postgres`` when this machine can start it (root with apt), else None."""
    url = os.environ.get("AIFHUB_BENCH_PG_URL") or os.environ.get("AIFHUB_TEST_PG_URL")
    if url or os.geteuid() != 0:
        return url
    try:
        out = subprocess.run([str(REPO / "scripts" / "test-postgres")], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else None


def _pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def _seed_running(db, n, course, prefix="u", last_charged=T0):
    """``n`` running sessions of ``course``, as admissions left them; returns the hub's list of them."""
    rows = [
        dict(
            user=f"{prefix}{i}",
            server_name="",
            course_id=course.id,
            state="active",
            started_at=T0,
            last_charged_at=last_charged,
            allocation_id="BENCH",
            gpu_kind="gpu",
            gpu_count=1,
            cpu_millis=2000,
            hold_gpu_ms=3_600_000,
            hold_cpu_ms=7_200_000,
            seq=0,
            charged_gpu_ms=0,
            charged_cpu_ms=0,
            warned_percent=0,
        )
        for i in range(n)
    ]
    for i in range(0, n, 20_000):
        db.call(lambda s, chunk=rows[i : i + 20_000]: s.execute(insert(SandboxSession), chunk))
    return {(f"{prefix}{i}", "") for i in range(n)}


async def _admissions(dbs, course, admissions):
    """Latencies (s) of ``admissions`` admissions on each side, alternating: now through the state gateway,
    0.2.0 in a session on the loop, as each service ran them."""
    latencies = {side: [] for side in SIDES}
    for i in range(admissions):
        for side, (admit, _tick) in SIDES.items() if i % 2 else reversed(SIDES.items()):
            db = dbs[side]
            t = time.perf_counter()
            if side == "now":
                await db.run(admit, course, f"l{i}", "", None, 200000, now=T0)
            else:
                with db._sessionmaker() as s, s.begin():  # 0.2.0 opened its sessions on the loop
                    admit(s, course, f"l{i}", "", None, 200000, now=T0)
            latencies[side].append(time.perf_counter() - t)
    return latencies


def admission_latency(backend, admissions=200, background=0):
    """p50 and p99 of admissions on each side, over ``background`` sessions already running."""
    course = _course()
    dbs = {side: backend.database(f"admit-{side}") for side in SIDES}
    try:
        for db in dbs.values():
            _seed_running(db, background, course, prefix="bg")
        lat = asyncio.run(_admissions(dbs, course, admissions))
    finally:
        for db in dbs.values():
            db.close()
    now, old = lat["now"], lat["0.2.0"]
    return {
        "admissions": admissions,
        "background": background,
        "p50_ms": 1000 * statistics.median(now),
        "p99_ms": 1000 * _pct(now, 99),
        "base_p50_ms": 1000 * statistics.median(old),
        "base_p99_ms": 1000 * _pct(old, 99),
    }


async def _probe(stop, interval=0.005):
    """The longest the loop was late to wake a coroutine sleeping ``interval`` until ``stop`` is set."""
    worst = 0.0
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(interval)
        worst = max(worst, time.perf_counter() - t - interval)
    return worst


async def _tick_on_loop(side, db, running, catalog, now):
    """One tick as that side's service ran it, with the loop probed; returns (tick seconds, longest stall)."""
    _admit, tick = SIDES[side]
    stop = asyncio.Event()
    probe = asyncio.ensure_future(_probe(stop))
    await asyncio.sleep(0.02)
    t = time.perf_counter()
    if side == "now":
        result = await db.run(tick, running, now, catalog, now=now)
    else:
        with db._sessionmaker() as s, s.begin():
            result = tick(s, running, now, catalog, now=now)
    took = time.perf_counter() - t
    await asyncio.sleep(0.02)
    stop.set()
    stall = await probe
    if result.charged != len(running):
        raise RuntimeError(f"the {side} tick charged {result.charged} of {len(running)} sessions")
    return took, stall


def metering_tick(backend, sessions=10_000):
    """Seconds of one tick over ``sessions`` running sessions, and the loop's longest stall, on each side."""
    course = _course()
    catalog = Catalog(courses={course.id: course})
    out = {"sessions": sessions}
    for side in ("0.2.0", "now"):
        db = backend.database(f"tick-{side}")
        try:
            running = _seed_running(db, sessions, course)
            out[side] = asyncio.run(_tick_on_loop(side, db, running, catalog, T0 + timedelta(minutes=1)))
        finally:
            db.close()
    (out["tick_s"], out["stall_s"]), (out["base_tick_s"], out["base_stall_s"]) = out.pop("now"), out.pop("0.2.0")
    return out


def run_all(folder, admissions=200, tick_sessions=(10_000, 100_000), pg_url=None, pg_tick_sessions=(10_000, 100_000)):
    """Every ledger figure on SQLite and, with ``pg_url``, PostgreSQL: ``{backend: {figure: result}}``."""
    backends = [("SQLite", Backend("sqlite", Path(folder) / "sqlite"), tick_sessions)]
    if pg_url:
        backends.append(("PostgreSQL", Backend("postgresql", pg_url=pg_url), pg_tick_sessions))
    out = {}
    for name, backend, ticks in backends:
        try:
            out[name] = {
                "admission": admission_latency(backend, admissions),
                "admission_loaded": admission_latency(backend, admissions, background=10_000),
                "ticks": [metering_tick(backend, n) for n in ticks],
            }
        except Exception as exc:  # PostgreSQL's figures failing must not hide SQLite's
            if backend.kind == "sqlite":
                raise
            out[name] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]}
        finally:
            if backend.kind == "postgresql":
                backend.cleanup()
    return out


if __name__ == "__main__":  # python -m bench.ledger [scratch folder]: the ledger figures alone, quickly
    import json
    import tempfile

    print(
        json.dumps(run_all(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(), pg_url=postgres_url()), indent=2)
    )
