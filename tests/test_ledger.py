"""The GPU-hour ledger with a fake clock: holds, limits, metering, enforcement, settlement, exports.

Runs on SQLite, and on PostgreSQL when AIFHUB_TEST_PG_URL is set (`.ci/run` sets it).
"""

import csv
import io
import json
import threading
from datetime import date, datetime, timedelta, timezone
from xml.etree import ElementTree as ET

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledgerkit import PG_URL, T0, Clock, course, devices, fresh_database, grant
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from aifhub.catalog.loader import Catalog
from aifhub.ledger import admission, allocations, metering, reports, sessions
from aifhub.ledger.balances import allocation_balance
from aifhub.errors import Refusal
from aifhub.ledger.models import GpuClaim, GpuRate, SandboxSession, UsageEvent
from aifhub.ledger.units import MS_PER_HOUR, fmt_hours
from aifhub.service.statuses import status_of

BACKENDS = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.skipif(not PG_URL, reason="AIFHUB_TEST_PG_URL not set")),
]


@pytest.fixture(params=BACKENDS)
def db(request, tmp_path):
    database = fresh_database(request.param, tmp_path)
    yield database
    database.close()


CLUSTER = None  # the cluster places GPUs: no local pool


def admit(db, c, user, now, inventory="eight", server=""):
    with db.session() as s:
        return admission.admit(s, c, user, server, devices(8) if inventory == "eight" else inventory, 200000, now=now)


def tick(db, c, running, now, grace_s=120):
    with db.session() as s:
        return metering.tick(s, running, now, Catalog(courses={c.id: c}), grace_s=grace_s, now=now)


def balance(db, allocation_id="ALLOC"):
    with db.session() as s:
        return allocation_balance(s, allocations.get(s, allocation_id))


def test_holds_fill_the_allocation_and_the_next_spawn_is_refused_with_figures(db):
    grant(db, 20)  # exactly five 4-hour sessions on one GPU
    c = course()
    for i in range(5):
        admit(db, c, f"learner{i}", T0)
    b = balance(db)
    assert b["held_gpu_ms"] == 20 * MS_PER_HOUR and b["remaining_gpu_ms"] == 0
    with pytest.raises(Refusal) as refused:
        admit(db, c, "learner5", T0)
    assert refused.value.reason == "allocation-exhausted" and status_of(refused.value.reason) == 403
    assert "ALLOC" in refused.value.message and "0.00 of 20.00 GPU-hours used, 20.00 held" in refused.value.message


def test_fifty_simultaneous_admissions_never_overdraw(db):
    grant(db, 20)
    c = course()
    inventory = devices(50)
    admitted, refused, errors = [], [], []
    barrier = threading.Barrier(50)

    def one(i):
        barrier.wait()
        try:
            admit(db, c, f"l{i}", T0, inventory=inventory)
            admitted.append(i)
        except Refusal as r:
            refused.append(r.reason)
        except Exception as exc:  # noqa: BLE001 - any other failure is the bug we look for
            errors.append(repr(exc))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert len(admitted) == 5 and refused == ["allocation-exhausted"] * 45
    b = balance(db)
    assert b["remaining_gpu_ms"] == 0 and b["held_gpu_ms"] == 20 * MS_PER_HOUR
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(GpuClaim)) == 5


@pytest.mark.parametrize(
    "start, end, reason",
    [
        (date(2027, 1, 1), None, "allocation-not-started"),
        (None, date(2026, 11, 30), "allocation-expired"),
    ],
)
def test_allocation_validity_dates(db, start, end, reason):
    grant(db, 100, start=start, end=end)
    with pytest.raises(Refusal) as refused:
        admit(db, course(), "l", T0)
    assert refused.value.reason == reason


def test_closed_and_missing_allocations_refuse_gpu_courses_but_cpu_courses_run(db):
    grant(db, 100)
    with db.session() as s:
        allocations.close(s, "ALLOC")
    with pytest.raises(Refusal) as refused:
        admit(db, course(), "l", T0)
    assert refused.value.reason == "allocation-closed"
    with pytest.raises(Refusal) as refused:
        admit(db, course(allocation="NOPE"), "l", T0)
    assert refused.value.reason == "no-allocation" and "NOPE" in refused.value.message
    admit(db, course("cpu-course", gpu=None, allocation="NOPE"), "l", T0)  # CPU time is tracked, nothing to pay


def test_metering_charges_once_per_interval_in_idempotent_events(db):
    grant(db, 100)
    c = course()
    a = admit(db, c, "ann", T0)
    clock = Clock()
    running = {("ann", "")}
    tick(db, c, running, clock.advance(minutes=30))
    tick(db, c, running, clock.now)  # same instant: nothing more to charge
    with db.session() as s:
        events = list(s.scalars(select(UsageEvent)))
        assert [(e.seq, e.gpu_ms, e.cpu_ms) for e in events] == [(1, 30 * 60_000, 2 * 30 * 60_000)]
        duplicate = UsageEvent(
            session_id=a.session_id,
            seq=1,
            user="ann",
            course_id=c.id,
            allocation_id="ALLOC",
            gpu_kind="gpu",
            start_at=T0,
            end_at=clock.now,
            gpu_ms=1,
            cpu_ms=1,
        )
    with pytest.raises(IntegrityError):
        with db.session() as s:
            s.add(duplicate)
    b = balance(db)
    assert b["used_gpu_ms"] == 30 * 60_000
    assert b["held_gpu_ms"] == 4 * MS_PER_HOUR - 30 * 60_000
    assert b["remaining_gpu_ms"] == b["granted_gpu_ms"] - b["used_gpu_ms"] - b["held_gpu_ms"]


def test_a_pending_pod_holds_but_is_charged_only_from_when_it_runs(db):
    grant(db, 100)
    c = course(max_session="1h")
    with db.session() as s:  # a Kubernetes spawn: the pod waits for a node
        admission.admit(s, c, "pat", "", CLUSTER, 200000, now=T0, pending=True)
    running = {("pat", "")}  # the hub lists the starting server
    r = tick(db, c, running, T0 + timedelta(minutes=70))  # long past max_session: no charge, no stop
    assert r.charged == 0 and r.stops == []
    assert balance(db)["used_gpu_ms"] == 0 and balance(db)["held_gpu_ms"] == MS_PER_HOUR  # the hold stays
    with db.session() as s:
        sessions.mark_running(s, "pat", "", now=T0 + timedelta(minutes=70))
    tick(db, c, running, T0 + timedelta(minutes=80))
    assert balance(db)["used_gpu_ms"] == 10 * 60_000
    with db.session() as s:
        metering.release(s, "pat", "", "stopped", now=T0 + timedelta(minutes=85))
    assert balance(db)["used_gpu_ms"] == 15 * 60_000 and balance(db)["held_gpu_ms"] == 0
    with db.session() as s:  # a spawn that never ran is released without a charge
        admission.admit(s, c, "quin", "", CLUSTER, 200000, now=T0, pending=True)
        metering.release(s, "quin", "", "start failed", now=T0 + timedelta(minutes=30))
    assert balance(db)["used_gpu_ms"] == 15 * 60_000


def test_pending_sessions_stay_out_of_the_batched_charge(db):
    grant(db, 1000)
    c = course(max_session="4h")
    with db.session() as s:  # more of each than one statement charges at once, all admitted at the same moment
        for i in range(40):
            admission.admit(s, c, f"wait{i}", "", CLUSTER, 200000, now=T0, pending=True)
            admission.admit(s, c, f"run{i}", "", CLUSTER, 200000, now=T0)
    running = {(f"{kind}{i}", "") for kind in ("wait", "run") for i in range(40)}
    assert tick(db, c, running, T0 + timedelta(minutes=10)).charged == 40
    assert balance(db)["used_gpu_ms"] == 40 * 10 * 60_000


def test_quota_warns_at_80_and_90_then_notice_then_stop_and_refuses_until_reset(db):
    grant(db, 100)
    c = course(quota=1, window="day")  # one GPU-hour a day
    admit(db, c, "bo", T0)
    clock = Clock()
    running = {("bo", "")}
    assert tick(db, c, running, clock.advance(minutes=30)).warnings == []
    r = tick(db, c, running, clock.advance(minutes=19))  # 49 min = 81.7 %
    assert [w[2] for w in r.warnings] == [80]
    r = tick(db, c, running, clock.advance(minutes=5))  # 54 min = 90 %
    assert [w[2] for w in r.warnings] == [90]
    r = tick(db, c, running, clock.advance(minutes=4))  # 58 min: 2 min left, within the grace notice
    assert [w[2] for w in r.warnings] == [100] and "stops in about 2 minute(s)" in r.warnings[0][3]
    assert r.stops == []
    r = tick(db, c, running, clock.advance(minutes=2, seconds=30))  # 60.5 min: over by one interval at most
    assert len(r.stops) == 1 and "used up" in r.stops[0][2] and "this day" in r.stops[0][2]
    with db.session() as s:  # the hub stops it; the spawner releases it
        metering.release(s, "bo", "", "stopped", now=clock.advance(seconds=5))
    b = balance(db)
    assert 60 * 60_000 <= b["used_gpu_ms"] <= 61 * 60_000 and b["held_gpu_ms"] == 0

    with pytest.raises(Refusal) as refused:
        admit(db, c, "bo", clock.advance(minutes=10))
    assert refused.value.reason == "quota"
    assert "resets on Thu 2026-12-03 00:00 UTC" in refused.value.message
    admit(db, c, "bo", datetime(2026, 12, 3, 0, 0, 1, tzinfo=timezone.utc))  # a new day, a new quota


def test_week_window_resets_on_monday_in_the_course_time_zone():
    from aifhub.ledger.windows import window_bounds

    start, reset = window_bounds("week", T0, "Europe/Paris")
    assert start == datetime(2026, 11, 29, 23, 0, tzinfo=timezone.utc)  # Monday 00:00 in Paris
    assert reset == datetime(2026, 12, 6, 23, 0, tzinfo=timezone.utc)
    assert window_bounds("course", T0, "UTC", date(2026, 11, 1))[1] is None


def test_max_session_stops_the_sandbox(db):
    grant(db, 100)
    c = course(max_session="1h")
    admit(db, c, "cy", T0)
    r = tick(db, c, {("cy", "")}, T0 + timedelta(minutes=61))
    assert r.stops and "longest session" in r.stops[0][2]


def test_a_server_that_vanished_is_settled_at_its_last_charge_and_frees_its_gpu(db):
    grant(db, 100)
    c = course()
    admit(db, c, "di", T0, inventory=devices(1))
    tick(db, c, {("di", "")}, T0 + timedelta(minutes=10))
    r = tick(db, c, set(), T0 + timedelta(minutes=40))  # the hub no longer runs it
    assert len(r.settled) == 1
    assert balance(db)["used_gpu_ms"] == 10 * 60_000 and balance(db)["held_gpu_ms"] == 0
    admit(db, c, "ed", T0 + timedelta(minutes=41), inventory=devices(1))  # the device is free again


def test_course_budget_is_a_limit_of_its_own(db):
    grant(db, 100)
    c = course(budget={"gpu_hours": 6})
    admit(db, c, "a", T0)
    admit(db, c, "b", T0)  # holds 4 + 2 (capped by the budget)
    with pytest.raises(Refusal) as refused:
        admit(db, c, "c", T0)
    assert refused.value.reason == "course-budget"


def test_a_new_rate_applies_from_its_date_and_never_rewrites_history(db):
    grant(db, 100)
    c = course()
    admit(db, c, "fi", T0)
    tick(db, c, {("fi", "")}, T0 + timedelta(hours=1))
    with db.session() as s:
        s.add(GpuRate(kind="gpu", weight_ppm=500_000, effective_from=T0 + timedelta(hours=1)))
    tick(db, c, {("fi", "")}, T0 + timedelta(hours=2))
    with db.session() as s:
        assert [e.gpu_ms for e in s.scalars(select(UsageEvent).order_by(UsageEvent.seq))] == [
            MS_PER_HOUR,
            MS_PER_HOUR // 2,
        ]


def test_mig_slices_are_charged_by_their_weight(db):
    grant(db, 100)
    c = course(gpu=("mig-1g.10gb", 1))
    admit(db, c, "gu", T0, inventory=CLUSTER)  # the cluster places MIG slices
    tick(db, c, {("gu", "")}, T0 + timedelta(hours=7))
    assert balance(db)["used_gpu_ms"] == 7 * MS_PER_HOUR * 142_857 // 1_000_000


def seeded(db):
    grant(db, 100)
    c = course()
    admit(db, c, "ann", T0)
    admit(db, c, "bob", T0)
    tick(db, c, {("ann", ""), ("bob", "")}, T0 + timedelta(hours=1))
    with db.session() as s:
        metering.release(s, "bob", "", "stopped", now=T0 + timedelta(hours=1))
    tick(db, c, {("ann", "")}, T0 + timedelta(hours=2, minutes=30))
    with db.session() as s:
        metering.release(s, "ann", "", "stopped", now=T0 + timedelta(hours=2, minutes=30))


def test_exports_table_csv_json(db):
    seeded(db)
    with db.session() as s:
        rows = reports.session_rows(s)
        assert [(r["user"], r["gpu_hours"], r["cpu_hours"], r["state"]) for r in rows] == [
            ("ann", 2.5, 5.0, "ended"),
            ("bob", 1.0, 2.0, "ended"),
        ]
        parsed = list(csv.DictReader(io.StringIO(reports.to_csv(rows))))
        assert [p["gpu_ms"] for p in parsed] == ["9000000", "3600000"]
        assert reports.session_rows(s, user="bob")[0]["gpu_ms"] == MS_PER_HOUR


def test_export_waldur_component_usages(db):
    seeded(db)
    with db.session() as s:
        [payload] = reports.waldur(s)
    assert payload["allocation"] == "ALLOC"
    assert payload["set_usage"]["date"] == "2026-12-01"
    usages = {u["type"]: u["amount"] for u in payload["set_usage"]["usages"]}
    assert usages == {"gpu": "3.50", "cpu": "7.00"}
    assert payload["set_user_usages"]["usages"] == [
        {"username": "ann", "usage": "2.50"},
        {"username": "bob", "usage": "1.00"},
    ]
    json.dumps(payload)


def test_export_car_records(db):
    seeded(db)
    with db.session() as s:
        xml = reports.car_xml(s, machine="aifhub-test")
    ns = {"urf": reports.CAR_NS}
    root = ET.fromstring(xml.split("?>", 1)[1])
    records = root.findall("urf:UsageRecord", ns)
    assert len(records) == 2
    ann = records[0]
    assert ann.find("urf:UserIdentity/urf:LocalUserId", ns).text == "ann"
    assert ann.find("urf:WallDuration", ns).text == "PT9000S"
    assert ann.find("urf:CpuDuration", ns).text == "PT18000S"
    assert ann.find("urf:MachineName", ns).text == "aifhub-test"
    assert ann.find("urf:RecordIdentity", ns).get(f"{{{reports.CAR_NS}}}recordId").startswith("aifhub-test ")
    assert ann.find("urf:UserIdentity/urf:GroupAttribute", ns).text == "ALLOC"


OPS = st.lists(
    st.tuples(st.sampled_from(["admit", "tick", "release"]), st.integers(0, 5), st.integers(1, 50)),
    min_size=1,
    max_size=30,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_invariants_hold_on_random_event_sequences(tmp_path, ops):
    """balance = granted - charged - held; overdraw at most one interval; replay changes nothing."""
    db = fresh_database("sqlite", tmp_path)
    try:
        grant(db, 3)
        c = course(quota=2, window="course", max_session="2h")
        clock = Clock()
        running = set()
        interval = timedelta(minutes=10)
        for op, who, minutes in ops:
            user = f"u{who}"
            if op == "admit" and (user, "") not in running:
                try:
                    admit(db, c, user, clock.now)
                    running.add((user, ""))
                except Refusal:
                    pass
            elif op == "release" and (user, "") in running:
                with db.session() as s:
                    metering.release(s, user, "", "stopped", now=clock.now)
                running.discard((user, ""))
            else:
                clock.advance(minutes=min(minutes, 10))  # at most one interval between ticks
                result = tick(db, c, running, clock.now)
                for u, server, _ in result.stops:  # the hub stops them right away
                    with db.session() as s:
                        metering.release(s, u, server, "stopped", now=clock.now)
                    running.discard((u, server))
            b = balance(db)
            assert b["remaining_gpu_ms"] == b["granted_gpu_ms"] - b["used_gpu_ms"] - b["held_gpu_ms"]
            one_interval_all_running = len(running) * interval.total_seconds() * 1000 + 6 * 10 * 60_000
            assert b["remaining_gpu_ms"] >= -one_interval_all_running
        with db.session() as s:
            before = [(e.session_id, e.seq, e.gpu_ms) for e in s.scalars(select(UsageEvent))]
            per_session = {x.id: x.charged_gpu_ms for x in s.scalars(select(SandboxSession))}
        for sid, total in per_session.items():
            assert total == sum(g for (i, _, g) in before if i == sid)
        for session_id, seq, _ in before[:3]:  # replaying a recorded event is refused, and changes nothing
            with pytest.raises(IntegrityError):
                with db.session() as s:
                    s.add(
                        UsageEvent(
                            session_id=session_id,
                            seq=seq,
                            user="x",
                            course_id=c.id,
                            start_at=T0,
                            end_at=T0,
                            gpu_ms=999,
                            cpu_ms=0,
                        )
                    )
        with db.session() as s:
            assert [(e.session_id, e.seq, e.gpu_ms) for e in s.scalars(select(UsageEvent))] == before
    finally:
        db.close()


@pytest.mark.parametrize(
    "hours, shown",
    [(0, "0.00"), (0.003, "0.003"), (0.0005, "0.0005"), (0.05, "0.05"), (0.1, "0.10"), (1.234, "1.23"), (150, "150")],
)
def test_hours_are_shown_with_enough_digits_to_be_true(hours, shown):
    assert fmt_hours(round(hours * MS_PER_HOUR)) == shown


@given(st.integers(min_value=1, max_value=100 * MS_PER_HOUR))
def test_a_nonzero_amount_never_reads_zero(ms):
    assert float(fmt_hours(ms)) > 0
