"""One ledger with Slurm's accounting: `aifhub slurm sync` makes the association tree allocation -> course ->
learner with the grant, budget and quota as GrpTRESMins on GPUs; learners who leave lose their association;
`aifhub usage report --format slurm` prints the commands; a learner without an association is refused with
Slurm's words until the sync has run."""

import os
import subprocess
import sys

import pytest
from slurmkit import learner_first_uid, start_slurm_hub

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


def test_sync_builds_the_tree_and_learners_start_only_then(hub):
    slurm = hub.slurm
    site = slurm.accounts.name(learner_first_uid())
    # before the sync: Slurm itself refuses the learner's job, and the spawn says so
    r = hub.spawn("learner1", "gpu-fundamentals", wait=False)
    assert r.status_code in (201, 202, 409), r.text
    model = hub.server_model("learner1")
    if model is not None:  # the refusal comes after the admission: the spawn ends
        import time

        deadline = time.monotonic() + 30
        while hub.server_model("learner1") is not None and time.monotonic() < deadline:
            time.sleep(0.3)
    assert hub.server_model("learner1") is None
    assert "Slurm refused the sandbox" in hub.logs() and "Invalid account" in hub.logs()
    assert f"Your account on the cluster ({site}) is not in the course's Slurm account" in hub.logs()

    dry = cli(hub, "slurm", "sync", "--dry-run", "--cluster", slurm.cluster).stdout
    assert f"sacctmgr -i add account ehpc-aif-2026-pg01 cluster={slurm.cluster} parent=root" in dry
    assert "add account gpu-fundamentals" in dry and "parent=ehpc-aif-2026-pg01" in dry
    assert "modify account ehpc-aif-2026-pg01 set GrpTRESMins=gres/gpu=30000" in dry  # the grant: 500 GPU-hours
    assert f"add user {site} account=gpu-fundamentals" in dry
    assert f"modify user {site} where account=gpu-fundamentals set GrpTRESMins=gres/gpu=240" in dry  # quota 4 h
    assert ("gpu-fundamentals", "") not in assoc(slurm)  # a dry run changes nothing

    cli(hub, "slurm", "sync", "--cluster", slurm.cluster)
    tree = assoc(slurm)
    assert tree[("ehpc-aif-2026-pg01", "")] == ("root", "gres/gpu=30000")
    assert tree[("gpu-fundamentals", "")][0] == "ehpc-aif-2026-pg01"
    assert tree[("gpu-fundamentals", site)][1] == "gres/gpu=240"
    again = cli(hub, "slurm", "sync", "--dry-run", "--cluster", slurm.cluster).stdout
    assert "would run 0 sacctmgr command(s)" in again, again  # in step: nothing to do

    hub.spawn("learner1", "gpu-fundamentals")  # waits until ready: the association lets the job run
    job_id = hub.run_in_kernel("learner1", "import os; print(os.environ['SLURM_JOB_ID'])").strip()
    hub.gpu_job = job_id
    hub.stop_server("learner1")


def test_a_learner_who_leaves_the_course_loses_the_association(hub):
    slurm = hub.slurm
    site = slurm.accounts.name(learner_first_uid())
    assert ("gpu-fundamentals", site) in assoc(slurm)
    course = hub.courses_dir / "gpu-fundamentals" / "course.yaml"
    course.write_text(course.read_text().replace("roster: [learner1, learner2]", "roster: [learner2]"))
    out = cli(hub, "slurm", "sync", "--cluster", slurm.cluster).stdout
    assert f"delete user {site} where account=gpu-fundamentals" in out
    assert ("gpu-fundamentals", site) not in assoc(slurm)


def test_usage_report_prints_the_sacctmgr_commands(hub):
    out = cli(hub, "usage", "report", "--format", "slurm").stdout
    lines = out.splitlines()
    assert lines[0].startswith("sacctmgr -i add account ehpc-aif-2026-pg01 ")
    assert any(line.startswith("sacctmgr -i add account dl-basics ") for line in lines)


def test_sacct_usage_is_recorded_once_per_job_id(hub):
    """The GPU job of the first test ended (Stop cancelled it): sacct's GPU time is recorded once, by job id."""
    hub.stop()  # the service owns the ledger's database while it runs; the CLI records with it stopped
    job_id = hub.gpu_job
    first = cli(hub, "slurm", "usage", "--cluster", hub.slurm.cluster).stdout
    mine = [line for line in first.splitlines() if line.startswith(f"recorded job {job_id}:")]
    assert len(mine) == 1 and "gpu-fundamentals" in mine[0] and "1 GPU(s)" in mine[0], first
    line = next(x for x in first.splitlines() if x.startswith(f"job {job_id} session "))
    assert "session -" not in line and "ledger -" not in line, line  # tied to the ledger's session of that spawn
    again = cli(hub, "slurm", "usage", "--cluster", hub.slurm.cluster).stdout
    assert "# 0 new job(s) from sacct" in again and f"recorded job {job_id}:" not in again


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
