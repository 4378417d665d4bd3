"""Course sandboxes as Slurm jobs through the real hub (`aifhub up --sandboxes slurm`) on the local Slurm
(tests/localslurm): a CPU course and a GPU course start, run a cell as the learner's site account, with the
course's account, GPUs and time limit; Stop cancels the job."""

import os
from pathlib import Path

import pytest
from slurmkit import ALLOCATION, job_log, learner_first_uid, squeue, start_slurm_hub, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.root]


@pytest.fixture(scope="module")
def slurm_hub(slurm_cluster, hub_dir):
    hub = start_slurm_hub(slurm_cluster, hub_dir)
    yield hub
    hub.stop()


def test_gpu_course_runs_as_a_slurm_job_with_its_gpu_and_account(slurm_hub):
    hub = slurm_hub
    r = hub.spawn("learner1", "gpu-fundamentals", wait=False)
    assert r.status_code in (201, 202), r.text
    try:
        hub.wait_ready("learner1", timeout=120)
    except AssertionError:
        raise AssertionError(f"{hub.logs()[-4000:]}\n--- job output ---\n{job_log(hub)[-3000:]}") from None
    jobs = [j for j in squeue(hub.slurm, "%i", "%u", "%a", "%T", "%b", "%l", "%k") if j["%a"] == "gpu-fundamentals"]
    assert len(jobs) == 1, jobs
    job = jobs[0]
    uid = learner_first_uid()
    assert job["%T"] == "RUNNING"
    assert job["%u"] == hub.slurm.accounts.name(uid)  # the learner's site account, not root
    assert job["%b"] == "gres:gpu:1"  # the course's one GPU, as a real gres
    assert job["%l"] == "4:00:00"  # max_session: 4h
    assert "course=gpu-fundamentals" in job["%k"] and ALLOCATION.upper() in job["%k"].upper()
    out = hub.run_in_kernel(
        "learner1", "import os; print(os.getuid(), os.environ.get('CUDA_VISIBLE_DEVICES'), os.environ['SLURM_JOB_ID'])"
    )
    got_uid, cuda, job_id = out.split()
    assert int(got_uid) == uid
    assert cuda == "0"  # Slurm gave the job one of the node's GPUs
    assert job_id == job["%i"]
    # the course's materials reached the work folder, owned by the learner
    work = Path(hub.slurm.accounts.homes) / hub.slurm.accounts.name(uid) / "aifhub" / "gpu-fundamentals"
    assert work.is_dir() and work.stat().st_uid == uid
    assert any(work.iterdir()), "no course materials in the work folder"
    hub.stop_server("learner1")
    wait_for(lambda: not [j for j in squeue(hub.slurm, "%i") if j["%i"] == job["%i"]], what="the job gone")


def test_cpu_course_runs_a_cell(slurm_hub):
    hub = slurm_hub
    r = hub.spawn("mooc-learner", "dl-basics", wait=False)
    assert r.status_code in (201, 202), r.text
    try:
        hub.wait_ready("mooc-learner", timeout=120)
    except AssertionError:
        raise AssertionError(f"{hub.logs()[-4000:]}\n--- job output ---\n{job_log(hub)[-3000:]}") from None
    jobs = [j for j in squeue(hub.slurm, "%i", "%a", "%b", "%C", "%m") if j["%a"] == "dl-basics"]
    assert len(jobs) == 1, jobs
    assert jobs[0]["%b"] == "N/A" and jobs[0]["%C"] == "2"  # no GPU; the course's 2 CPUs
    out = hub.run_in_kernel("mooc-learner", "print(sum(range(10)), 'CUDA_VISIBLE_DEVICES' in __import__('os').environ)")
    assert out.split() == ["45", "False"]
    hub.stop_server("mooc-learner")


def test_the_address_endpoint_refuses_other_tokens(slurm_hub):
    hub = slurm_hub
    token = hub.token_for("learner2")  # a token of the user, not the server's own
    r = hub.api("POST", "aifhub-slurm/address", token=token, json={"server": "", "host": "127.0.0.1", "port": 9})
    assert r.status_code == 403, r.text
    r = hub.api("POST", "aifhub-slurm/address", json={"server": "", "host": "127.0.0.1", "port": 9})
    assert r.status_code == 403, r.text  # the admin's service token is not a server's either
    r = hub.api("POST", "aifhub-slurm/address", token=token, data="not json")
    assert r.status_code == 400, r.text


def test_settings_of_make_slurm_reach_the_spawner(slurm_hub):
    settings = slurm_hub.slurm.settings()
    assert os.path.exists(settings["SLURM_CONF"]) and settings["AIFHUB_SLURM_REST_URL"].startswith("http://127.0.0.1:")


def test_the_cli_backend_submits_reads_and_cancels_as_the_site_account(slurm_hub):
    """The second way to Slurm: sbatch, squeue and scancel run as the learner's account (setpriv)."""
    import asyncio

    from aifhub.hubside.slurm.rest import CliBackend

    slurm = slurm_hub.slurm
    site = slurm.accounts.name(slurm.accounts.uids[3])
    backend = CliBackend(env=slurm.env)
    job = {"account": "dl-basics", "cpus_per_task": 1, "memory_per_node": 100, "time_limit": 5,
           "current_working_directory": "/tmp", "standard_output": "/dev/null", "environment": {"GREETING": "a,b"},
           "comment": "aifhub course=dl-basics allocation=- session=1"}  # fmt: skip

    async def scenario():
        job_id = await backend.submit(site, '#!/bin/sh\n[ "$GREETING" = "a,b" ] && sleep 60\n', job)
        seen = await backend.job(site, job_id)
        for _ in range(50):
            if seen["job_state"] == "RUNNING":
                break
            await asyncio.sleep(0.2)
            seen = await backend.job(site, job_id)
        await backend.cancel(site, job_id)
        return job_id, seen

    job_id, seen = asyncio.run(scenario())
    assert seen["job_state"] == "RUNNING" and seen["user_name"] == site and seen["account"] == "dl-basics"
    wait_for(lambda: not [j for j in squeue(slurm, "%i", "%T") if j["%i"] == str(job_id) and j["%T"] != "CANCELLED"])
    state = slurm.run("sacct", "-X", "-n", "-P", "-j", str(job_id), "-o", "state,user").stdout.strip()
    assert state.startswith("CANCELLED") and state.endswith(f"|{site}"), state
