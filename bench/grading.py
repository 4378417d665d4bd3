"""Autograding: N submissions through aifhub's grading queue against ``nbgrader autograde`` run serially.

Both sides grade the same N collected submissions of the MOOC's problem set (``dl-basics/ps1-digits``;
half hand in the solution, half the blank notebook) in the same run, each in its own copy of the
course directory:

- baseline: one ``nbgrader autograde ps1-digits`` process, as an instructor runs it: one submission
  after another, each kernel a plain child of the grader;
- aifhub: the service's queue (:class:`aifhub.grading.manager.GradingManager`) with one worker per
  core (or ``workers``), each kernel sandboxed (its own uid when root, no network, limits); timed
  from queuing to the last job done, worker start-up included.
"""

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from .hubs import REPO

COURSE = "dl-basics"
ASSIGNMENT = "ps1-digits"


class _Admission:
    async def admit_grading(self, course_id, job_id, expected_s, cluster=False):
        return []  # the benchmark grades a CPU course: no GPU to take from a pool

    async def release_grading(self, job_id):
        pass


class _Core:
    """What the grading manager asks of the service's core: the catalog, and admission for GPU courses."""

    def __init__(self, courses_dir):
        from aifhub.catalog import load_catalog, load_images

        self.catalog = load_catalog([Path(courses_dir)], load_images(REPO / "sandbox_images"))
        self.admission = _Admission()


def _submissions(n):
    sys.path.insert(0, str(REPO / "tests"))
    from gradingkit import blank_notebook, solution_notebook

    good, blank = solution_notebook(), blank_notebook()
    return {f"s{i:02d}": (good if i % 2 == 0 else blank) for i in range(n)}


def _prepare(state, n, manager_cls):
    """A state directory with the assignment released and ``n`` submissions collected; returns the grading dir."""
    from aifhub.grading.coursedir import GradingDir

    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o711)
    gd = GradingDir(state / "grading", COURSE).ensure()
    for student, nb in _submissions(n).items():
        folder = gd.step("submitted", student, ASSIGNMENT)
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(folder / f"{ASSIGNMENT}.ipynb"))
        (folder / "timestamp.txt").write_text("2026-12-01 12:00:00.000000 UTC")
    return gd


async def _queue_run(state, n, workers, cell_timeout):
    from aifhub.grading.manager import GradingManager
    from aifhub.state.db import Database, sqlite_url

    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o711)
    db = Database(sqlite_url(state / "aifhub.sqlite"))
    manager = GradingManager(state, db, _Core(REPO / "courses"), workers=workers, cell_timeout=cell_timeout)
    try:
        await manager.release(COURSE, ASSIGNMENT)
        gd = _prepare(state, n, GradingManager)
        await manager.worker.run(
            await manager.courses.base_request(COURSE)
            | {"op": "add_students", "students": sorted(p.name for p in gd.step("submitted").iterdir())},
            "add students",
        )
        await manager.start()
        t0 = time.monotonic()
        queued = await manager.autograde(COURSE, ASSIGNMENT, requested_by="bench")
        ids = [j["id"] for j in queued["jobs"]]
        while True:
            jobs = await manager.jobs(COURSE, ASSIGNMENT, ids)
            if all(j["state"] in ("done", "failed") for j in jobs):
                break
            await asyncio.sleep(0.1)
        elapsed = time.monotonic() - t0
        return elapsed, jobs, manager.worker_count
    finally:
        await manager.stop()
        db.close()


def _serial_run(state, cell_timeout):
    """``nbgrader autograde ASSIGNMENT`` in a copy of the course directory: every submission, one process."""
    from aifhub.grading.coursedir import venv_path_env

    root = state / "grading" / COURSE
    env = venv_path_env({k: v for k, v in os.environ.items() if "TOKEN" not in k})
    cmd = [
        str(Path(sys.executable).parent / "nbgrader"),
        "autograde",
        ASSIGNMENT,
        "--force",
        f"--Execute.timeout={cell_timeout}",
    ]
    t0 = time.monotonic()
    out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    if out.returncode != 0:
        raise RuntimeError(f"nbgrader autograde failed ({out.returncode}): {out.stderr[-500:]}")
    return elapsed


def _scores(gradebook_url, n):
    from nbgrader.api import Gradebook

    with Gradebook(gradebook_url, COURSE) as gb:
        return {s.id: gb.find_submission(ASSIGNMENT, s.id).score for s in gb.students}


def grading_throughput(scratch, submissions=20, workers=0, cell_timeout=60):
    """Seconds to grade ``submissions`` through the queue and serially; the ratio serial / queue."""
    scratch = Path(scratch)
    queue_state, serial_state = scratch / "queue", scratch / "serial"
    for d in (queue_state, serial_state):
        shutil.rmtree(d, ignore_errors=True)
    scratch.mkdir(parents=True, exist_ok=True)
    scratch.chmod(0o711)
    queue_s, jobs, used = asyncio.run(_queue_run(queue_state, submissions, workers, cell_timeout))
    failed = [j for j in jobs if j["state"] != "done"]
    if failed:
        raise RuntimeError(f"{len(failed)} grading job(s) failed: {failed[0]['reason']}: {failed[0]['detail']}")
    # the baseline grades the same submissions in a copy of the course directory made the same way
    shutil.copytree(
        queue_state / "grading" / COURSE,
        serial_state / "grading" / COURSE,
        ignore=shutil.ignore_patterns("autograded", "exchange", ".workers"),
    )
    shutil.rmtree(serial_state / "grading" / COURSE / "autograded", ignore_errors=True)
    for name in ("nbgrader_config.py", "gradebook.url"):  # the copy's own folders and gradebook
        path = serial_state / "grading" / COURSE / name
        path.write_text(path.read_text().replace(str(queue_state), str(serial_state)))
    serial_s = _serial_run(serial_state, cell_timeout)
    queue_scores = {j["student_id"]: j["score"] for j in jobs}
    serial_scores = _scores(f"sqlite:///{serial_state / 'grading' / COURSE / 'gradebook.db'}", submissions)
    if queue_scores != serial_scores:
        raise RuntimeError(f"the queue and nbgrader disagree on scores: {queue_scores} vs {serial_scores}")
    return {
        "submissions": submissions,
        "workers": used,
        "queue_s": queue_s,
        "serial_s": serial_s,
        "ratio": serial_s / queue_s,
        "per_submission_queue_s": queue_s / submissions,
        "per_submission_serial_s": serial_s / submissions,
        "full_marks": sum(1 for s in queue_scores.values() if s == 10),
        "cores": os.cpu_count(),
    }
