"""Ledger benchmarks, in process on the service's real database code (SQLite in a scratch folder).

- Admission latency (p50, p99): a full admission (allocation lock, limits, hold, session) against a
  baseline transaction that only records a session row, alternating, same database.
- One metering tick with N running sessions, against the baseline of reading those N sessions.
"""

import statistics
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import select

from aifhub.catalog.loader import Catalog
from aifhub.catalog.model import Course, GpuRequest, LearnerQuota, SandboxRequest, Schedule
from aifhub.ledger import allocations, metering, sandboxes
from aifhub.state.db import Database, sqlite_url
from aifhub.ledger.models import SandboxSession

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=timezone.utc)


def _course():
    return Course(id="bench", title="Bench", kind="workshop", enrollment="open", instructors=("t",),
                  sandbox=SandboxRequest(image="pytorch-cuda", gpu=GpuRequest("gpu", 1), cpu=2, max_session="1h"),
                  path=Path("."), schedule=Schedule(start=date(2026, 1, 1)), allocation="BENCH",
                  quota=LearnerQuota(window="week", gpu_hours=10))


def _database(folder, name):
    folder.mkdir(parents=True, exist_ok=True)
    db = Database(sqlite_url(folder / f"{name}.sqlite"))
    with db.session() as s:
        allocations.create(s, "BENCH", 10**9, title="bench")
    return db


def _pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def admission_latency(folder, admissions=200):
    db = _database(Path(folder), "admission")
    course = _course()
    ledger, plain = [], []
    try:
        for i in range(admissions):
            t = time.perf_counter()
            with db.session() as s:
                sandboxes.admit(s, course, f"l{i}", "", None, 200000, now=T0)
            ledger.append(time.perf_counter() - t)
            t = time.perf_counter()
            with db.session() as s:
                s.add(SandboxSession(user=f"p{i}", server_name="", course_id="plain", state="ended", started_at=T0))
            plain.append(time.perf_counter() - t)
    finally:
        db.close()
    return {"admissions": admissions,
            "p50_ms": 1000 * statistics.median(ledger), "p99_ms": 1000 * _pct(ledger, 99),
            "base_p50_ms": 1000 * statistics.median(plain), "base_p99_ms": 1000 * _pct(plain, 99)}


def metering_tick(folder, sessions=10_000):
    db = _database(Path(folder), "tick")
    course = _course()
    try:
        with db.session() as s:
            for i in range(sessions):
                s.add(SandboxSession(user=f"u{i}", server_name="", course_id=course.id, state="active",
                                     started_at=T0, last_charged_at=T0, allocation_id="BENCH", gpu_kind="gpu",
                                     gpu_count=1, cpu_millis=2000, hold_gpu_ms=3_600_000, hold_cpu_ms=7_200_000))
        running = {(f"u{i}", "") for i in range(sessions)}
        t = time.perf_counter()
        with db.session() as s:
            rows = len(s.scalars(select(SandboxSession).where(SandboxSession.state == "active")).all())
        read_s = time.perf_counter() - t
        now = T0 + timedelta(minutes=1)
        t = time.perf_counter()
        with db.session() as s:
            result = metering.tick(s, running, now, Catalog(courses={course.id: course}), now=now)
        tick_s = time.perf_counter() - t
    finally:
        db.close()
    assert rows == sessions and result.charged == sessions
    return {"sessions": sessions, "tick_s": tick_s, "read_s": read_s}
