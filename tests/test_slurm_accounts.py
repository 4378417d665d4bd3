"""One ledger with Slurm's accounting: the service keeps the association tree allocation -> course -> learner
(the grant, budget and quota as GrpTRESMins on GPUs) in step by itself: at its start, right after a learner's
first admission (so their first spawn works), and when the catalog changes (learners who leave lose their
association); `aifhub slurm sync` makes the same tree by hand; `aifhub usage report --format slurm` prints the
commands."""

import os
import subprocess
import sys

import pytest
from slurmkit import learner_first_uid, squeue, start_slurm_hub, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.root]


@pytest.fixture(scope="module")
def hub(slurm_cluster, hub_dir):
    for account in ("ehpc-aif-2026-pg01", "dl-basics", "gpu-fundamentals"):  # a tree of an earlier module goes
        slurm_cluster.run("sacctmgr", "-i", "delete", "user", "where", f"account={account}", check=False)
    for account in ("dl-basics", "gpu-fundamentals", "ehpc-aif-2026-pg01"):
        slurm_cluster.run("sacctmgr", "-i", "delete", "account", account, check=False)
    hub = start_slurm_hub(slurm_cluster, hub_dir, associations=False)
    yield hub
    hub.stop()


def assoc(slurm):
    out = slurm.run(
        "sacctmgr",
        "-n",
        "-P",
        "show",
        "assoc",
        f"cluster={slurm.cluster}",
        "format=account,user,parentname,grptresmins",
    ).stdout
    return {(a, u): (p, t) for a, u, p, t in (line.split("|") for line in out.splitlines() if line.count("|") == 3)}


def cli(hub, *args):
    """``aifhub ARGS`` on the hub's state and courses, with the Slurm client's settings (SLURM_CONF)."""
    out = subprocess.run(
        [sys.executable, "-m", "aifhub", *args, "--state-dir", str(hub.state_dir), "--courses", str(hub.courses_dir)],
        capture_output=True,
        text=True,
        env=dict(os.environ, **hub.slurm.env),
    )
    assert out.returncode == 0, f"aifhub {' '.join(args)} failed: {out.stderr}"
    return out


def test_a_new_learners_first_spawn_works_without_a_manual_sync(hub):
    """The service made the allocation's and the courses' accounts at its start; the learner has no uid, hence no
    site account, before their first admission: right after it, before the job is submitted, the service adds
    their association (with the quota), and the job runs."""
    slurm = hub.slurm
    site = slurm.accounts.name(learner_first_uid())
    wait_for(lambda: ("gpu-fundamentals", "") in assoc(slurm), what="the service's sync at its start")
    tree = assoc(slurm)
    assert tree[("ehpc-aif-2026-pg01", "")] == ("root", "gres/gpu=30000")  # the grant: 500 GPU-hours
    assert tree[("gpu-fundamentals", "")][0] == "ehpc-aif-2026-pg01"
    assert ("gpu-fundamentals", site) not in tree  # no admission yet: no uid, no site account

    hub.spawn("learner1", "gpu-fundamentals")  # waits until ready: Slurm accepted and ran the job
    assert assoc(slurm)[("gpu-fundamentals", site)][1] == "gres/gpu=240"  # the quota: 4 GPU-hours
    assert "Invalid account" not in hub.logs()
    job_id = hub.run_in_kernel("learner1", "import os; print(os.environ['SLURM_JOB_ID'])").strip()
    hub.gpu_job = job_id
    hub.stop_server("learner1")
    wait_for(lambda: not squeue(slurm, "%i"), what="the job's end")


def test_the_ledger_and_sacct_agree_on_two_gpu_jobs(hub):
    """Two short GPU jobs through the hub, stopped: the service reads sacct, records each job once (by job id)
    and makes its session's charge the job's GPU TRES time; the ledger's GPU-seconds and sacct's agree within
    0.5 %, also for the first test's job."""
    import re
    import sqlite3
    import time

    hub.spawn("learner2", "gpu-fundamentals")  # learner2's first spawn: the service adds the association too
    hub.spawn("learner1", "gpu-fundamentals")
    jobs = [
        hub.run_in_kernel(u, "import os; print(os.environ['SLURM_JOB_ID'])").strip() for u in ("learner2", "learner1")
    ]
    time.sleep(5)
    hub.stop_server("learner2")
    hub.stop_server("learner1")
    jobs = [int(j) for j in [hub.gpu_job, *jobs]]
    ids = ",".join(map(str, jobs))

    def ledger():
        with sqlite3.connect(hub.state_dir / "aifhub.sqlite") as conn:
            return dict(
                conn.execute(
                    "SELECT j.job_id, s.charged_gpu_ms FROM slurm_jobs j JOIN sandbox_sessions s ON s.id = j.session_id "
                    f"WHERE j.job_id IN ({ids})"
                ).fetchall()
            )

    found = wait_for(lambda: len(ledger()) == 3 and ledger(), timeout=90, what="the service's record of the 3 jobs")
    out = hub.slurm.run("sacct", "-X", "-n", "-P", "-j", ids, "-o", "jobid,elapsedraw,alloctres").stdout
    sacct = {}
    for line in out.splitlines():
        job, elapsed, tres = line.split("|")
        gpus = int(dict(t.split("=") for t in tres.split(",") if "=" in t)["gres/gpu"])
        sacct[int(job)] = gpus * int(elapsed) * 1000
    assert set(sacct) == set(jobs) and all(sacct.values()), out
    ledger_s, sacct_s = sum(found.values()) / 1000, sum(sacct.values()) / 1000
    assert abs(ledger_s - sacct_s) <= 0.005 * sacct_s, (found, sacct)
    with sqlite3.connect(hub.state_dir / "aifhub.sqlite") as conn:  # once per job id: one row, one correction
        rows = conn.execute(f"SELECT count(*) FROM slurm_jobs WHERE job_id IN ({ids})").fetchone()[0]
    assert rows == 3
    for job in jobs:  # each was metered while it ran (not only Slurm's figure afterwards): what the log says
        said = re.search(
            rf"Slurm job {job} \(.*?\): (\d+) GPU ms by sacct; session \d+ corrected by (-?\d+) GPU ms", hub.logs()
        )
        assert said, f"no settlement of job {job} in the service's log"
        metered = int(said[1]) - int(said[2])
        print(f"job {job}: metered {metered / 1000:.1f} GPU-s, sacct {int(said[1]) / 1000:.1f} GPU-s")
        assert metered > 0, said[0]
    hub.gpu_jobs = jobs


def test_manual_sync_rebuilds_a_tree_removed_by_hand(hub):
    """`aifhub slurm sync [--dry-run]` makes the same tree from the ledger (the service's tree went by hand)."""
    slurm = hub.slurm
    site = slurm.accounts.name(learner_first_uid())
    wait_for(lambda: not squeue(slurm, "%i"), what="the jobs' end")  # Slurm keeps accounts with jobs running
    for account in ("dl-basics", "gpu-fundamentals"):
        slurm.run("sacctmgr", "-i", "delete", "user", "where", f"account={account}", check=False)
    for account in ("dl-basics", "gpu-fundamentals", "ehpc-aif-2026-pg01"):
        slurm.run("sacctmgr", "-i", "delete", "account", account)
    assert ("gpu-fundamentals", "") not in assoc(slurm)

    dry = cli(hub, "slurm", "sync", "--dry-run", "--cluster", slurm.cluster).stdout
    assert f"sacctmgr -i add account ehpc-aif-2026-pg01 cluster={slurm.cluster} parent=root" in dry
    assert "add account gpu-fundamentals" in dry and "parent=ehpc-aif-2026-pg01" in dry
    assert "modify account ehpc-aif-2026-pg01 set GrpTRESMins=gres/gpu=30000" in dry
    assert f"add user {site} account=gpu-fundamentals" in dry
    assert f"modify user {site} where account=gpu-fundamentals set GrpTRESMins=gres/gpu=240" in dry
    assert ("gpu-fundamentals", "") not in assoc(slurm)  # a dry run changes nothing

    cli(hub, "slurm", "sync", "--cluster", slurm.cluster)
    tree = assoc(slurm)
    assert tree[("ehpc-aif-2026-pg01", "")] == ("root", "gres/gpu=30000")
    assert tree[("gpu-fundamentals", "")][0] == "ehpc-aif-2026-pg01"
    assert tree[("gpu-fundamentals", site)][1] == "gres/gpu=240"
    again = cli(hub, "slurm", "sync", "--dry-run", "--cluster", slurm.cluster).stdout
    assert "would run 0 sacctmgr command(s)" in again, again  # in step: nothing to do


def test_a_learner_who_leaves_the_course_loses_the_association(hub):
    """The roster changes in course.yaml: the service's catalog watch sees it and deletes the association."""
    slurm = hub.slurm
    site = slurm.accounts.name(learner_first_uid())
    assert ("gpu-fundamentals", site) in assoc(slurm)
    course = hub.courses_dir / "gpu-fundamentals" / "course.yaml"
    course.write_text(course.read_text().replace("roster: [learner1, learner2]", "roster: [learner2]"))
    wait_for(lambda: ("gpu-fundamentals", site) not in assoc(slurm), timeout=60, what="the association's removal")
    assert f"delete user {site} where account=gpu-fundamentals" in hub.logs()
    again = cli(hub, "slurm", "sync", "--dry-run", "--cluster", slurm.cluster).stdout
    assert "would run 0 sacctmgr command(s)" in again, again


def test_usage_report_prints_the_sacctmgr_commands(hub):
    out = cli(hub, "usage", "report", "--format", "slurm").stdout
    lines = out.splitlines()
    assert lines[0].startswith("sacctmgr -i add account ehpc-aif-2026-pg01 ")
    assert any(line.startswith("sacctmgr -i add account dl-basics ") for line in lines)


def test_sacct_usage_is_recorded_once_per_job_id(hub):
    """With the service stopped, `aifhub slurm usage` records what the service has not (nothing: it settled the
    ended jobs already) and shows each job beside its session's charge, equal now."""
    hub.stop()  # the service owns the ledger's database while it runs; the CLI records with it stopped
    first = cli(hub, "slurm", "usage", "--cluster", hub.slurm.cluster).stdout
    for job_id in hub.gpu_jobs:
        assert f"recorded job {job_id}:" not in first, first  # the service recorded it: not twice
        line = next(x for x in first.splitlines() if x.startswith(f"job {job_id} session "))
        assert "session -" not in line and "ledger -" not in line, line  # tied to the ledger's session of that spawn
        slurm_h, ledger_h = line.split("Slurm ")[1].split(" GPU-hours, ledger ")
        assert slurm_h == ledger_h, line
    again = cli(hub, "slurm", "usage", "--cluster", hub.slurm.cluster).stdout
    assert "# 0 new job(s) from sacct" in again


def test_course_sessions_become_slurm_reservations(hub):
    """`sync --reservations`: a session ahead gets a reservation for the course's account on enough whole nodes
    (3 learners x 1 GPU on nodes of 2 GPUs: 2 nodes); a session dropped from the course loses it."""
    from datetime import datetime, timedelta, timezone

    hub.stop()  # (stopped already by the usage test when it ran; the CLI alone works here)
    slurm = hub.slurm
    start = (datetime.now(timezone.utc) + timedelta(hours=2)).replace(second=0, microsecond=0)
    course = hub.courses_dir / "gpu-fundamentals" / "course.yaml"
    original = course.read_text()
    session = f"sessions:\n  - {{start: '{start.isoformat()}', end: '{(start + timedelta(hours=1)).isoformat()}', expected: 3}}\n"
    course.write_text(original + session)
    name = f"aifhub-gpu-fundamentals-{start:%Y%m%dT%H%M}"
    try:
        out = cli(hub, "slurm", "sync", "--reservations", "--cluster", slurm.cluster).stdout
        assert f"scontrol create reservation ReservationName={name}" in out, out
        shown = slurm.run("scontrol", "-o", "show", "reservation", name).stdout
        assert "Accounts=gpu-fundamentals" in shown and "NodeCnt=2" in shown and "State=INACTIVE" in shown, shown
        again = cli(hub, "slurm", "sync", "--reservations", "--dry-run", "--cluster", slurm.cluster).stdout
        assert "scontrol" not in again, again  # in step
        course.write_text(original)
        out = cli(hub, "slurm", "sync", "--reservations", "--cluster", slurm.cluster).stdout
        assert f"scontrol delete ReservationName={name}" in out, out
        assert name not in slurm.run("scontrol", "-o", "show", "reservation", check=False).stdout
    finally:
        course.write_text(original)
        slurm.run("scontrol", "delete", f"ReservationName={name}", check=False)
