"""The ledger's one charging formula (``units.charge_ms``, ``units.rates_per_s``) and its idle correction
(``metering.credit_after``), on a real database with a fake clock."""

from datetime import timedelta

import pytest
from ledgerkit import T0, course, devices, fresh_database, grant
from sqlalchemy import select

from aifhub.catalog.loader import Catalog
from aifhub.ledger import admission, metering
from aifhub.ledger.balances import allocation_balance
from aifhub.ledger import allocations
from aifhub.ledger.models import SandboxSession, UsageEvent
from aifhub.ledger.units import MS_PER_HOUR, charge_ms, rates_per_s


@pytest.fixture
def db(tmp_path):
    database = fresh_database("sqlite", tmp_path)
    yield database
    database.close()


@pytest.mark.parametrize(
    "elapsed_ms, weight, gpus, cpu_millis, expected",
    [
        (MS_PER_HOUR, 1_000_000, 1, 2000, (MS_PER_HOUR, 2 * MS_PER_HOUR)),  # a full GPU and two CPUs for an hour
        (MS_PER_HOUR, 142_857, 1, 1000, (MS_PER_HOUR * 142_857 // 1_000_000, MS_PER_HOUR)),  # a MIG slice
        (999, 500_000, 2, 1, (999, 0)),  # truncated, never rounded up
        (7, 333_333, 1, 1500, (2, 10)),
        (MS_PER_HOUR, 1_000_000, 0, 500, (0, MS_PER_HOUR // 2)),  # no GPU: the weight does not count
    ],
)
def test_charge_ms(elapsed_ms, weight, gpus, cpu_millis, expected):
    assert charge_ms(elapsed_ms, weight, gpus, cpu_millis) == expected


def test_rates_per_s_are_what_a_second_is_charged():
    assert rates_per_s(250_000, 2, 1500) == (500.0, 1500.0)
    assert charge_ms(1000, 250_000, 2, 1500) == (500, 1500)
    assert rates_per_s(1_000_000, None, None) == (0.0, 0.0)


def _session(s):
    return s.scalars(select(SandboxSession)).one()


def test_an_idle_stop_credits_back_what_was_charged_after_the_idleness_began(db):
    grant(db, 100)
    c = course(gpu=("gpu", 2), cpu=1)
    with db.session() as s:
        admission.admit(s, c, "ann", "", devices(8), 200000, now=T0)
    with db.session() as s:
        metering.tick(s, {("ann", "")}, T0, Catalog(courses={c.id: c}), now=T0 + timedelta(minutes=40))
    idle_since = T0 + timedelta(minutes=25)
    with db.session() as s:
        event = metering.credit_after(s, _session(s), idle_since)
        assert (event.seq, event.start_at, event.end_at) == (2, idle_since, T0 + timedelta(minutes=40))
        assert (event.gpu_ms, event.cpu_ms) == (-2 * 15 * 60_000, -15 * 60_000)  # 15 min of 2 GPUs and 1 CPU
    with db.session() as s:
        session = _session(s)
        assert (session.charged_gpu_ms, session.charged_cpu_ms) == (2 * 25 * 60_000, 25 * 60_000)
        events = [(e.seq, e.gpu_ms) for e in s.scalars(select(UsageEvent).order_by(UsageEvent.seq))]
        assert events == [(1, 2 * 40 * 60_000), (2, -2 * 15 * 60_000)]
        assert metering.credit_after(s, session, T0 + timedelta(minutes=45)) is None  # nothing charged after then
        balance = allocation_balance(s, allocations.get(s, "ALLOC"))
    assert balance["used_gpu_ms"] == 2 * 25 * 60_000  # the allocation sees the corrected total


def test_the_credit_never_exceeds_what_was_charged(db):
    grant(db, 100)
    c = course(cpu=1)
    with db.session() as s:
        admission.admit(s, c, "bob", "", devices(8), 200000, now=T0)
    with db.session() as s:
        session = _session(s)
        session.last_charged_at = T0 + timedelta(minutes=10)  # as if charged, but nothing recorded
        event = metering.credit_after(s, session, T0)
        assert (event.gpu_ms, event.cpu_ms) == (0, 0)
        assert (session.charged_gpu_ms, session.charged_cpu_ms) == (0, 0)


def _job(session_id, job_id, elapsed_s, gpus=2, course_id="gpu-course"):
    return {
        "job_id": job_id,
        "account": course_id,
        "site_user": "aifl200000",
        "state": "CANCELLED",
        "elapsed_s": elapsed_s,
        "gpu_count": gpus,
        "gpu_ms": gpus * elapsed_s * 1000,
        "cpu_ms": 4 * elapsed_s * 1000,
        "course_id": course_id,
        "allocation_id": "ALLOC",
        "session_id": session_id,
    }


def test_slurms_figure_settles_an_ended_jobs_charge_once(db):
    """sacct's GPU TRES time replaces the metered charge of the job's session (a correcting event), once per job
    id; a job whose session is still active waits; a job of no session, or of a session that names another job,
    is recorded without a correction."""
    from aifhub.slurmacct.usage import SlurmJob, record

    grant(db, 100)
    c = course(gpu=("gpu", 2), cpu=1)
    with db.session() as s:
        admission.admit(s, c, "ann", "", None, 200000, now=T0)
        sid = _session(s).id
        _session(s).pod = "slurm-job/7"  # what the Slurm spawner tells when the job runs
    with db.session() as s:
        metering.tick(s, {("ann", "")}, T0, Catalog(courses={c.id: c}), now=T0 + timedelta(minutes=40))
    with db.session() as s:
        assert record(s, "c1", [_job(sid, 7, 39 * 60)]) == []  # the session runs still: not yet
    with db.session() as s:
        metering.settle(s, _session(s), T0 + timedelta(minutes=40), "stopped")
    # job 9: another installation's job whose comment names a session of the same number: it corrects nothing
    jobs = [_job(sid, 7, 39 * 60), _job(None, 8, 60), _job(sid, 9, 600)]
    with db.session() as s:
        new = record(s, "c1", jobs)
    assert [(j["job_id"], j["corrected_gpu_ms"]) for j in new] == [(7, -2 * 60_000), (8, None), (9, None)]
    with db.session() as s:
        session = _session(s)
        assert (session.charged_gpu_ms, session.charged_cpu_ms) == (2 * 39 * 60_000, 39 * 60_000)
        assert [e.gpu_ms for e in s.scalars(select(UsageEvent).order_by(UsageEvent.seq))][-1] == -2 * 60_000
        assert record(s, "c1", jobs) == []  # once per job id
        assert s.scalar(select(UsageEvent.seq).order_by(UsageEvent.seq.desc()).limit(1)) == session.seq
        assert len(s.scalars(select(SlurmJob)).all()) == 3
        balance = allocation_balance(s, allocations.get(s, "ALLOC"))
    assert balance["used_gpu_ms"] == 2 * 39 * 60_000  # the allocation sees Slurm's figure
