"""The Slurm spawner's and the accounting tree's pure parts, without a Slurm: a course as job properties,
Slurm's reasons in words, the tokens, the --slurm-config file, the tree's plan, sacct's lines."""

import base64
import hashlib
import hmac
import json
import subprocess
import sys

import pytest

from aifhub.catalog.model import Course, GpuRequest, LearnerQuota, SandboxRequest
from aifhub.hubside.slurm import jobspec
from aifhub.hubside.slurm.rest import jwt_token, with_environment
from aifhub.hubside.slurm.settings import SlurmConfigError, load
from aifhub.slurmacct import tree as slurm_tree
from aifhub.slurmacct.usage import parse_sacct

GPU_COURSE = {
    "id": "gpu-fundamentals",
    "allocation": "EHPC-AIF-2026-PG01",
    "sandbox": {"gpu": {"kind": "h100", "count": 2}, "cpu": 3.5, "memory": "16G", "max_session": "1h30m"},
    "slurm": {"partition": "booster", "qos": "training", "reservation": "day1", "constraint": "ib", "x": None},
}


def test_a_course_becomes_job_properties():
    job = jobspec.job_properties(GPU_COURSE, "gpu-fundamentals", "aifl1", {"A": "1"}, "/home/aifl1", {}, 17)
    assert job["account"] == "gpu-fundamentals"
    assert job["gres"] == "gpu:h100:2"
    assert job["cpus_per_task"] == 4 and job["memory_per_node"] == 15259 and job["time_limit"] == 90
    assert (job["partition"], job["qos"], job["reservation"], job["constraints"]) == (
        "booster",
        "training",
        "day1",
        "ib",
    )
    assert job["comment"] == "aifhub course=gpu-fundamentals allocation=EHPC-AIF-2026-PG01 session=17"
    cpu = {"id": "c", "sandbox": {"gpu": None}, "slurm": {}}
    job = jobspec.job_properties(cpu, "c", "u", {}, "/", {"partition": "cpu", "default_memory_mb": 512})
    assert "gres" not in job and job["partition"] == "cpu" and job["time_limit"] == 240
    assert job["memory_per_node"] == 512 and "qos" not in job
    generic = {"id": "g", "sandbox": {"gpu": {"kind": "gpu", "count": 1}}}
    assert jobspec.job_properties(generic, "g", "u", {}, "/", {})["gres"] == "gpu:1"
    typed = jobspec.job_properties(generic, "g", "u", {}, "/", {"gpu_types": {"gpu": "a100"}})
    assert typed["gres"] == "gpu:a100:1"


@pytest.mark.parametrize(
    "reason, words",
    [
        ("Priority", "queued behind other jobs"),
        ("Resources", "waiting for free resources"),
        ("ReqNodeNotAvail, UnavailableNodes:node1", "reservation or nodes"),
        ("AssocGrpGRESMinutes", "GPU budget is used up"),
        ("QOSMaxGRESPerUser", "your limit"),
        ("SomethingNew", "waiting (Slurm: SomethingNew)"),
    ],
)
def test_pending_reasons_in_words(reason, words):
    said = jobspec.pending_words(reason)
    assert words in said and (reason in said)


def test_start_estimates_and_ends_in_words():
    assert jobspec.start_estimate(0, now=100) == ""
    assert jobspec.start_estimate(130, now=100) == "expected to start within about a minute"
    assert jobspec.start_estimate(100 + 600, now=100) == "expected to start in about 10 min"
    assert jobspec.start_estimate(100 + 86400, now=100).startswith("expected to start at 1970-01-02")
    assert jobspec.ended_words({"job_state": "CANCELLED", "state_reason": "None"}) == "was cancelled"
    assert "OutOfMemory" in jobspec.ended_words({"job_state": ["OUT_OF_MEMORY"], "state_reason": "OutOfMemory"})


def test_tokens_are_slurms_hs256_jwt():
    token = jwt_token(b"k" * 32, "aifl1", lifetime=60, now=1000)
    head, body, sig = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    assert json.loads(base64.urlsafe_b64decode(pad(body))) == {"iat": 1000, "exp": 1060, "sun": "aifl1"}
    expected = hmac.new(b"k" * 32, f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(pad(sig)) == expected


def test_the_cli_backend_puts_the_environment_in_the_script_quoted():
    script = with_environment("#!/bin/sh\nexec x\n", {"A": "1,2", "B": "it's"})
    assert script == "#!/bin/sh\nexport A=1,2\nexport B='it'\"'\"'s'\nexec x\n"


def test_the_slurm_config_file_is_checked(tmp_path):
    good = tmp_path / "slurm.yaml"
    good.write_text("rest_url: http://slurm:6820\njwt_key_file: /etc/slurm/jwt.key\npartition: gpu\n")
    assert load(good)["partition"] == "gpu"
    bad = tmp_path / "bad.yaml"
    bad.write_text("rest_ulr: http://x\n")
    with pytest.raises(SlurmConfigError, match="unknown setting.*rest_ulr"):
        load(bad)
    bad.write_text("- a\n")
    with pytest.raises(SlurmConfigError, match="expected a mapping"):
        load(bad)


def test_aifhub_up_says_what_slurm_needs(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "aifhub", "up", "--sandboxes", "slurm", "--state-dir", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert out.returncode == 2 and "needs slurmrestd's URL and the JWT key" in out.stderr, out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "aifhub", "up", "--slurm-config", "x.yaml", "--state-dir", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "--slurm-config is for --sandboxes slurm" in out.stderr


def _course(cid, roster=(), budget=None, quota=None, allocation="EHPC-A"):
    return Course(
        id=cid,
        title=cid,
        kind="workshop",
        enrollment="roster",
        instructors=("prof",),
        sandbox=SandboxRequest(image="x", gpu=GpuRequest("gpu")),
        path=None,
        roster=tuple(roster),
        allocation=allocation,
        budget=budget or {},
        quota=None if quota is None else LearnerQuota(window="week", gpu_hours=quota),
    )


def test_the_tree_plan_adds_what_is_missing_fixes_limits_and_removes_leavers():
    courses = [_course("c1", roster=["ann", "bob"], budget={"gpu_hours": 10}, quota=2)]
    names = {"ann": "u_ann", "bob": None, "prof": "u_prof"}
    tree = slurm_tree.desired(courses, {"EHPC-A": {"gpu_hours": 100}}, {"c1": {"ann", "bob", "prof"}}, names.get)
    assert tree.skipped == [("bob", "no site account yet")]
    plan = slurm_tree.as_shell(slurm_tree.plan(tree, {}, {}, "cl"))
    assert plan[0] == "sacctmgr -i add account ehpc-a cluster=cl parent=root description=aifhub organization=ehpc-a"
    assert "sacctmgr -i modify account ehpc-a set GrpTRESMins=gres/gpu=6000" in plan
    assert "sacctmgr -i modify account c1 set GrpTRESMins=gres/gpu=600" in plan
    assert "sacctmgr -i modify user u_ann where account=c1 set GrpTRESMins=gres/gpu=120" in plan
    # Slurm as it is: ann in step, a leaver (old) still there, the course's budget changed by hand
    accounts, users = slurm_tree.parse_associations(
        "ehpc-a||root|gres/gpu=6000|\nc1||ehpc-a|gres/gpu=900|\nc1|u_ann|c1|gres/gpu=120|\nc1|old|c1||\n"
        "c1|u_prof|c1||\nother|x|root||\n"
    )
    plan = slurm_tree.as_shell(slurm_tree.plan(tree, accounts, users, "cl"))
    assert plan == [
        "sacctmgr -i modify account c1 set GrpTRESMins=gres/gpu=600",
        "sacctmgr -i modify user u_prof where account=c1 set GrpTRESMins=gres/gpu=120",
        "sacctmgr -i delete user old where account=c1 cluster=cl",
    ]  # and nothing about accounts aifhub does not own ('other')


def test_sacct_lines_become_usage_of_ended_jobs_only():
    text = (
        "12|c1|u_ann|COMPLETED|3600|billing=4,cpu=4,gres/gpu=2,mem=16G,node=1|aifhub course=c1 allocation=A session=7\n"
        "13|c1|u_ann|RUNNING|60|cpu=1,gres/gpu=1|aifhub course=c1 allocation=A session=8\n"
        "14|c2|u_bob|CANCELLED by 0|10|cpu=2|\n"
    )
    jobs = parse_sacct(text)
    assert [j["job_id"] for j in jobs] == [12, 14]
    assert jobs[0]["gpu_ms"] == 2 * 3600 * 1000 and jobs[0]["cpu_ms"] == 4 * 3600 * 1000
    assert (jobs[0]["course_id"], jobs[0]["session_id"]) == ("c1", 7)
    assert jobs[1]["state"] == "CANCELLED" and jobs[1]["gpu_ms"] == 0 and jobs[1]["session_id"] is None


def test_sessions_map_to_reservations_and_the_running_one_is_found():
    from datetime import datetime, timedelta, timezone

    from aifhub.catalog.model import WarmSession
    from aifhub.slurmacct import reservations

    now = datetime(2026, 12, 8, 10, 0, tzinfo=timezone.utc)
    past = WarmSession(now - timedelta(hours=3), now - timedelta(hours=2), 5)
    ahead = WarmSession(now + timedelta(hours=1), now + timedelta(hours=2), 5)
    course = _course("c1")
    course = Course(**{**course.__dict__, "sessions": (past, ahead)})
    wanted = reservations.desired([course], (4, 32), "gpu", now=now)
    assert list(wanted) == ["aifhub-c1-20261208T1100"] and wanted["aifhub-c1-20261208T1100"]["nodes"] == 2
    found = reservations.parse(
        "ReservationName=aifhub-c1-20261201T0900 StartTime=x\nReservationName=site-maint StartTime=y\n"
    )
    plan = reservations.plan(wanted, found)
    assert plan[0][:3] == ["create", "reservation", "ReservationName=aifhub-c1-20261208T1100"]
    assert "Accounts=c1" in plan[0] and "NodeCnt=2" in plan[0] and "PartitionName=gpu" in plan[0]
    assert plan[1] == ["delete", "ReservationName=aifhub-c1-20261201T0900"]  # never the site's own
    sessions = [w.to_dict() for w in (past, ahead)]
    assert reservations.current(sessions, "c1", now=now + timedelta(minutes=90)) == "aifhub-c1-20261208T1100"
    assert reservations.current(sessions, "c1", now=now) is None
