"""The batched metering tick decides exactly as the per-session tick of aifhub 0.2.0 did.

Both run the same random workshops (admissions in bursts, servers that stop without telling, quotas,
a small allocation, max_session) on databases of their own; after every tick their results, every
session's totals and state, and every usage event must be the same. The 0.2.0 code is the benchmarks'
baseline (``bench/ledger_v020``), kept as it was.
"""

import random
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from ledgerkit import PG_URL, T0, course, devices, fresh_database, grant
from sqlalchemy import select

from aifhub.catalog.loader import Catalog
from aifhub.errors import Refusal
from aifhub.ledger import admission, metering
from aifhub.ledger.models import SandboxSession, UsageEvent

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.ledger_v020 import errors as old_errors  # noqa: E402
from bench.ledger_v020 import metering as old_metering  # noqa: E402
from bench.ledger_v020 import sandboxes as old_sandboxes  # noqa: E402

SUPERSEDED = "superseded by a new start"
BACKENDS = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.skipif(not PG_URL, reason="AIFHUB_TEST_PG_URL not set")),
]


class Side:
    """One implementation on its own database."""

    def __init__(self, db, admit, release, tick, refusal):
        self.db, self._admit, self._release, self._tick, self.refusal = db, admit, release, tick, refusal

    def admit(self, c, user, now):
        try:
            with self.db.session() as s:
                self._admit(s, c, user, "", devices(200), 200000, now=now)
            return True
        except self.refusal as refused:
            return refused.reason

    def release(self, user, now):
        with self.db.session() as s:
            self._release(s, user, "", "stopped", now=now)

    def tick(self, catalog, running, asked_at, now):
        with self.db.session() as s:
            r = self._tick(s, running, asked_at, catalog, grace_s=300, settle_grace_s=10, now=now)
        return r.charged, sorted(r.settled), sorted(r.warnings), sorted(r.stops)

    def state(self):
        with self.db.session() as s:
            sessions = [
                (
                    x.id,
                    x.user,
                    x.state,
                    x.seq,
                    x.charged_gpu_ms,
                    x.charged_cpu_ms,
                    x.warned_percent,
                    x.charge_until,
                    x.stop_reason,
                    x.end_reason,
                    x.last_charged_at,
                    None if x.end_reason == SUPERSEDED else x.ended_at,
                )  # (ended by the wall clock then)
                for x in s.scalars(select(SandboxSession).order_by(SandboxSession.id))
            ]
            events = [
                (e.session_id, e.seq, e.start_at, e.end_at, e.gpu_ms, e.cpu_ms, e.allocation_id)
                for e in s.scalars(select(UsageEvent).order_by(UsageEvent.session_id, UsageEvent.seq))
            ]
        return sessions, events


@pytest.fixture(params=BACKENDS)
def sides(request, tmp_path):
    new = Side(fresh_database(request.param, tmp_path), admission.admit, metering.release, metering.tick, Refusal)
    old = Side(
        fresh_database(request.param, tmp_path),
        old_sandboxes.admit,
        old_sandboxes.release,
        old_metering.tick,
        old_errors.Refusal,
    )
    yield new, old
    new.db.close()
    old.db.close()


@pytest.mark.parametrize("seed, bulk", [(1, 2), (2, metering.BULK_AT_LEAST)])  # (2: nearly every group by statement)
def test_the_batched_tick_decides_as_the_per_session_tick(sides, seed, bulk, monkeypatch):
    monkeypatch.setattr(metering, "BULK_AT_LEAST", bulk)
    new, old = sides
    rnd = random.Random(seed)
    for side in sides:
        grant(side.db, 40)  # runs out during the workshop: warnings, then stops at the allocation
    workshop = course(quota=0.2, window="day", max_session="50m", gpu=("gpu", 1))
    mooc = course("cpu-mooc", gpu=None, quota=None, max_session=None, cpu=1)
    catalog = Catalog(courses={workshop.id: workshop, mooc.id: mooc})
    now, running, users = T0, set(), [f"l{i}" for i in range(90)]
    for step in range(16):
        burst = rnd.sample(users, rnd.choice([2, 5, 40]))  # a burst of 40 makes one group charged by statement
        for user in burst:
            c = workshop if rnd.random() < 0.7 else mooc
            if (user, "") not in running:
                answers = {side.admit(c, user, now) for side in sides}
                assert len(answers) == 1, (step, user, answers)
                if answers == {True}:
                    running.add((user, ""))
        for user, _ in rnd.sample(sorted(running), min(len(running), rnd.choice([0, 1, 3]))):
            if rnd.random() < 0.5:
                for side in sides:
                    side.release(user, now)
            running.discard((user, ""))  # the other half the hub forgets: reconciliation settles them
        asked_at = now
        now = now + timedelta(seconds=rnd.choice([20, 60, 300, 600]))
        hub_sees = running | ({("l0", "")} if step % 3 else set())  # a server the ledger never admitted
        results = [side.tick(catalog, hub_sees, asked_at, now) for side in sides]
        assert results[0] == results[1], step
        for user, server, _ in results[0][3]:
            if rnd.random() < 0.6:  # the hub stops most of them at once, some only later
                running.discard((user, server))
        got, want = new.state(), old.state()
        for a, b in zip(got[0], want[0]):
            assert a == b, (step, a, b)
        assert got[1] == want[1], step
    sessions, events = new.state()
    assert (
        len(events) > 150 and any(s[8] for s in sessions) and any(s[6] for s in sessions)
    )  # it charged, stopped, warned
