"""Waiting for Slurm, visible and safe: a pending job's reason and expected start in the progress and in
``GET me`` within 2 s; Stop cancels a pending job; a job cancelled before its server answers ends the spawn
with Slurm's reason and the next spawn works (batchspawner#253); a restarted hub adopts running jobs."""

import json
import threading
import time

import pytest
import requests
from hubrunner import ADMIN_TOKEN
from slurmkit import job_log, squeue, start_slurm_hub, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.root]


@pytest.fixture(scope="module")
def slurm_hub(slurm_cluster, hub_dir):
    hub = start_slurm_hub(slurm_cluster, hub_dir)
    yield hub
    hub.stop()


@pytest.fixture
def gpus_taken(slurm_hub):
    """Every GPU of the cluster taken by jobs of another account (for 10 minutes), released afterwards."""
    slurm = slurm_hub.slurm
    other = slurm.accounts.uids[-1]
    ids = []
    for _ in slurm.node_names:
        out = slurm.run(
            "sbatch", "--parsable", f"--uid={other}", "--gid=65534", "--account=gpu-fundamentals", "--gres=gpu:2",
            "--time=10", "--mem=100", "-o", "/dev/null", "--chdir=/tmp", "--wrap=sleep 600",
        ).stdout  # fmt: skip
        ids.append(out.strip().split(";")[0])
    wait_for(lambda: all(j["%T"] == "RUNNING" for j in squeue(slurm, "%i", "%T") if j["%i"] in ids), what="blockers")
    yield ids
    slurm.run("scancel", *ids, check=False)
    wait_for(lambda: not [j for j in squeue(slurm, "%i") if j["%i"] in ids], what="blockers gone")


def stream_progress(hub, name, events, stop):
    """Collect ``name``'s progress events with the time each arrived, until ready/failed or ``stop``."""
    url = f"{hub.url}/hub/api/users/{name}/server/progress"
    try:
        with requests.get(url, stream=True, timeout=60, headers={"Authorization": f"token {ADMIN_TOKEN}"}) as resp:
            for line in resp.iter_lines():
                if line.startswith(b"data:"):
                    event = json.loads(line[5:])
                    events.append((time.monotonic(), event))
                    if event.get("ready") or event.get("failed") or stop.is_set():
                        return
    except requests.RequestException:  # the hub ends the stream when the spawn is stopped
        if not stop.is_set():
            raise


def start_pending(hub, name, course):
    """Ask for ``name``'s server; return (time asked, events being collected, stop flag)."""
    hub.ensure_user(name)
    t0 = time.monotonic()
    threading.Thread(target=hub.spawn, args=(name, course), kwargs={"wait": False}, daemon=True).start()
    wait_for(lambda: (hub.server_model(name) or {}).get("pending") == "spawn", timeout=10, interval=0.05)
    events, stop = [], threading.Event()
    threading.Thread(target=stream_progress, args=(hub, name, events, stop), daemon=True).start()
    return t0, events, stop


def my_job(hub, account):
    jobs = [j for j in squeue(hub.slurm, "%i", "%a", "%T", "%r", "%u") if j["%a"] == account and j["%u"] != "aifl"]
    mine = [j for j in jobs if j["%u"] != hub.slurm.accounts.name(hub.slurm.accounts.uids[-1])]
    return mine[0] if mine else None


def test_pending_reason_and_estimate_within_2s_and_stop_cancels(slurm_hub, gpus_taken):
    hub = slurm_hub
    t0, events, stop = start_pending(hub, "learner1", "gpu-fundamentals")
    # Slurm's reason (not "not looked at yet") and its backfill estimate (the blockers end in 10 minutes)
    found = wait_for(
        lambda: next((e for e in events if "(Slurm: " in e[1]["message"] and "expected" in e[1]["message"]), None),
        timeout=10,
        interval=0.05,
    )
    message = found[1]["message"]
    print(f"reason and estimate {found[0] - t0:.2f} s after the spawn: {message}")
    assert found[0] - t0 < 2.0, f"the queue's reason came {found[0] - t0:.1f} s after the spawn: {message}"
    assert "Slurm: Resources" in message or "Slurm: Priority" in message, message
    assert "expected to start in about" in message, message
    me = requests.get(
        f"{hub.url}/services/aifhub/api/v1/me", headers={"Authorization": f"token {hub.token_for('learner1')}"}
    ).json()
    queue = next(c for c in me["courses"] if c["id"] == "gpu-fundamentals")["queue"]
    assert queue["state"] == "PENDING" and queue["reason"] in ("Resources", "Priority"), queue
    assert queue["start_estimate"] > time.time() + 60 and "waiting" in queue["words"]
    job = my_job(hub, "gpu-fundamentals")
    assert job and job["%T"] == "PENDING"
    stop.set()
    hub.stop_server("learner1")
    wait_for(lambda: not [j for j in squeue(hub.slurm, "%i") if j["%i"] == job["%i"]], what="the pending job gone")
    state = hub.slurm.run("sacct", "-X", "-n", "-P", "-j", job["%i"], "-o", "state").stdout.strip()
    assert state.startswith("CANCELLED"), state
    me = requests.get(
        f"{hub.url}/services/aifhub/api/v1/me", headers={"Authorization": f"token {hub.token_for('learner1')}"}
    ).json()
    assert next(c for c in me["courses"] if c["id"] == "gpu-fundamentals")["queue"] is None


def test_job_cancelled_before_its_server_answers_ends_the_spawn_and_the_next_works(slurm_hub, gpus_taken):
    hub = slurm_hub
    t0, events, stop = start_pending(hub, "learner2", "gpu-fundamentals")
    wait_for(lambda: any("cluster's queue" in e[1]["message"] for e in events), timeout=10)
    job = my_job(hub, "gpu-fundamentals")
    hub.slurm.run("scancel", job["%i"])  # an administrator (or the scheduler) ends it
    failed = wait_for(lambda: next((e for e in events if e[1].get("failed")), None), timeout=20)
    assert f"job {job['%i']} was cancelled" in failed[1]["message"], failed
    wait_for(lambda: hub.server_model("learner2") is None, timeout=20, what="the spawn ended")
    # the GPUs free again: the next spawn of the same learner works
    hub.slurm.run("scancel", *gpus_taken)
    r = hub.spawn("learner2", "gpu-fundamentals", wait=False)
    assert r.status_code in (201, 202), r.text
    try:
        hub.wait_ready("learner2", timeout=120)
    except AssertionError:
        raise AssertionError(f"{hub.logs()[-3000:]}\n--- job output ---\n{job_log(hub)[-2000:]}") from None
    assert hub.run_in_kernel("learner2", "print(6 * 7)").strip() == "42"
    hub.stop_server("learner2")


def test_a_restarted_hub_adopts_running_jobs(slurm_hub):
    hub = slurm_hub
    r = hub.spawn("adopted", "dl-basics", wait=False)
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("adopted", timeout=120)
    job = my_job(hub, "dl-basics")
    assert job and job["%T"] == "RUNNING"
    hub.stop()
    assert [j["%T"] for j in squeue(hub.slurm, "%i", "%T") if j["%i"] == job["%i"]] == ["RUNNING"]
    hub.start()
    model = hub.wait_ready("adopted", timeout=60)
    assert model["ready"]
    out = hub.run_in_kernel("adopted", "import os; print(os.environ['SLURM_JOB_ID'])")
    assert out.strip() == job["%i"]  # the same job, adopted, not a new one
    hub.stop_server("adopted")
    wait_for(lambda: not [j for j in squeue(hub.slurm, "%i") if j["%i"] == job["%i"]], what="the job gone")


def test_a_course_whose_slurm_budget_is_used_up_says_so(slurm_hub):
    """The course's GrpTRESMins on GPUs at 0 (its budget used up in Slurm): the job pends with Slurm's
    AssocGrpGRESMinutes, and the learner reads it in words."""
    hub = slurm_hub
    slurm = hub.slurm
    slurm.run("sacctmgr", "-i", "modify", "account", "gpu-fundamentals", "set", "GrpTRESMins=gres/gpu=0")
    try:
        t0, events, stop = start_pending(hub, "learner1", "gpu-fundamentals")
        found = wait_for(
            lambda: next((e for e in events if "GPU budget" in e[1]["message"]), None), timeout=15, interval=0.1
        )
        assert "the course's GPU budget is used up (Slurm: AssocGrpGRESMinutes" in found[1]["message"], found
        stop.set()
        hub.stop_server("learner1")
    finally:
        slurm.run("sacctmgr", "-i", "modify", "account", "gpu-fundamentals", "set", "GrpTRESMins=gres/gpu=-1")


def test_a_job_that_fails_before_its_server_answers_ends_the_spawn(slurm_hub):
    """The job cannot make the work folder (the learner's home is not writable): it fails, the spawn ends with
    Slurm's word for it, and once the home is fixed the next spawn works."""
    import os
    import pwd

    hub = slurm_hub
    hub.spawn("failing", "dl-basics")  # the learner's uid comes with the first admission
    site = my_job(hub, "dl-basics")["%u"]
    hub.stop_server("failing")
    home = pwd.getpwnam(site).pw_dir
    os.chmod(home, 0o500)
    os.chown(home, 0, 0)
    try:
        t0, events, stop = start_pending(hub, "failing", "dl-basics")
        failed = wait_for(lambda: next((e for e in events if e[1].get("failed")), None), timeout=60)
        assert "failed" in failed[1]["message"] and "before JupyterLab answered" in failed[1]["message"], failed
        wait_for(lambda: hub.server_model("failing") is None, timeout=20, what="the spawn ended")
    finally:
        os.chown(home, pwd.getpwnam(site).pw_uid, 65534)
        os.chmod(home, 0o700)
    hub.spawn("failing", "dl-basics")
    assert hub.run_in_kernel("failing", "print('back')").strip() == "back"
    hub.stop_server("failing")
