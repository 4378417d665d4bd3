"""Building blocks for ledger tests: databases (SQLite, PostgreSQL), courses and a fake clock."""

import os
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import create_engine, text

from aifhub.catalog.model import Course, GpuRequest, LearnerQuota, SandboxRequest, Schedule
from aifhub.ledger import allocations
from aifhub.state.db import Database, sqlite_url
from aifhub.service.gpu_pool import GpuDevice

PG_URL = os.environ.get("AIFHUB_TEST_PG_URL")  # e.g. postgresql+psycopg://aifhub:aifhub@127.0.0.1/aifhub_test
T0 = datetime(2026, 12, 2, 9, 0, tzinfo=timezone.utc)  # a Wednesday


def fresh_database(kind, tmp_path):
    if kind == "sqlite":
        return Database(sqlite_url(Path(tmp_path) / f"ledger-{uuid.uuid4().hex[:6]}.sqlite"))
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    admin.dispose()
    sep = "&" if "?" in PG_URL else "?"
    return Database(f"{PG_URL}{sep}options=-csearch_path%3D{schema}")


def course(
    course_id="gpu-course",
    gpu=("gpu", 1),
    max_session="4h",
    quota=None,
    window="week",
    budget=None,
    allocation="ALLOC",
    cpu=2,
    schedule_start=date(2026, 11, 1),
):
    return Course(
        id=course_id,
        title=f"Course {course_id}",
        kind="workshop",
        enrollment="open",
        instructors=("teacher",),
        sandbox=SandboxRequest(
            image="pytorch-cuda", gpu=GpuRequest(*gpu) if gpu else None, cpu=cpu, memory="8G", max_session=max_session
        ),
        path=Path("."),
        schedule=Schedule(start=schedule_start),
        allocation=allocation,
        budget=budget or {},
        quota=None if quota is None else LearnerQuota(window=window, gpu_hours=quota),
    )


def devices(n):
    return [GpuDevice(id=str(i)) for i in range(n)]


def grant(db, hours, allocation_id="ALLOC", start=None, end=None):
    with db.session() as s:
        allocations.create(s, allocation_id, hours, start, end, title="test")


class Clock:
    def __init__(self, start=T0):
        self.now = start

    def advance(self, **kw):
        self.now += timedelta(**kw)
        return self.now
