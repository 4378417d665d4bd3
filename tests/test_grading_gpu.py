"""A GPU course's submissions are graded on a device from the local pool, charged to the course (--gpus 0)."""

import json
import time

import nbformat
import pytest
from conftest import start_hub
from gradingkit import REPO, submit, with_cell

COURSE, ASSIGNMENT = "gpu-fundamentals", "ps1-matmul"
SOURCE = REPO / "courses" / COURSE / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
SERVICE_ARGS = "--GradingManager.workers=1 --GradingManager.notebook_timeout=60 --GradingManager.gpu_wait=1"


@pytest.fixture(scope="module")
def hub(hub_dir):
    hub = start_hub(hub_dir, gpus="0", env={"AIFHUB_SERVICE_ARGS": SERVICE_ARGS})
    yield hub
    hub.stop()


def solution_that_checks_its_gpu():
    """The reference solution, whose first solution cell fails unless exactly device 0 is visible."""
    nb = nbformat.read(str(SOURCE), as_version=4)
    first = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code")
    check = "import os\nassert os.environ.get('CUDA_VISIBLE_DEVICES') == '0', os.environ.get('CUDA_VISIBLE_DEVICES')\n"
    return with_cell(nb, first.metadata["nbgrader"]["grade_id"], check + first.source)


def wait_done(hub, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        jobs = hub.service("GET", f"courses/{COURSE}/jobs").json()["jobs"]
        if jobs and all(j["state"] in ("done", "failed") for j in jobs):
            return jobs
        assert time.monotonic() < deadline, f"grading did not finish: {jobs}"
        time.sleep(0.5)


def test_grading_a_gpu_course_takes_a_device_and_charges_the_course(hub):
    assert hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/release").status_code == 200
    hub.ensure_user("learner1")
    assert (
        submit(hub, "learner1", solution_that_checks_its_gpu(), course=COURSE, assignment=ASSIGNMENT).status_code == 201
    )
    assert hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/collect").status_code == 200

    # while a learner's sandbox holds the only GPU, the job waits for it
    assert hub.spawn("learner2", COURSE).status_code in (201, 202)
    assert hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/autograde").status_code == 202
    time.sleep(3)
    [job] = hub.service("GET", f"courses/{COURSE}/jobs").json()["jobs"]
    assert job["state"] == "queued" and job["detail"] == "waiting for a free GPU", job
    hub.stop_server("learner2")

    [job] = wait_done(hub)
    assert job["state"] == "done" and job["score"] == job["max_score"] > 0, job  # it saw exactly device 0
    sessions = json.loads(
        hub.cli(
            "usage",
            "report",
            "--format",
            "json",
            "--course",
            COURSE,
            "--user",
            "aifhub-grader",
            "--state-dir",
            str(hub.state_dir),
        ).stdout
    )["sessions"]
    assert len(sessions) == 1 and sessions[0]["gpus"] == 1 and sessions[0]["gpu_ms"] > 0
    assert sessions[0]["allocation"] == "EHPC-AIF-2026-PG01" and sessions[0]["state"] == "ended"
    pool = hub.service("GET", "pool").json()
    assert not any(d["busy"] for d in pool["devices"])
