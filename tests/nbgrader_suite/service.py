"""One aifhub service per nbgrader test, on an event loop of its own thread.

nbgrader's tests call its apps synchronously in the test's thread (``run_nbgrader``), and the apps
reach the exchange with blocking HTTP; the service (:class:`servicekit.InProcessService`: the real
app, database, grading manager and queue, with a fake hub) therefore runs on a loop in a thread,
and the harness talks to it through :meth:`ServiceThread.call`.
"""

import asyncio
import shutil
import threading
import time
from pathlib import Path

from servicekit import REPO, InProcessService

INSTRUCTOR = "teacher"

COURSE_YAML = """\
id: {course}
title: nbgrader test course {course}
kind: workshop
enrollment: roster
instructors: [{instructor}]
roster: [{learner}]
sandbox:
  image: cpu-base
"""


class ServiceThread:
    """A fresh service whose catalog has the given courses, each with ``learner`` on its roster and
    :data:`INSTRUCTOR` as its instructor."""

    def __init__(self, folder, courses, learner):
        self.folder = Path(folder)
        self.learner = learner
        self.courses_dir = self.folder / "courses"
        for course in courses:
            d = self.courses_dir / course
            (d / "source").mkdir(parents=True)
            (d / "course.yaml").write_text(COURSE_YAML.format(course=course, instructor=INSTRUCTOR, learner=learner))
        (self.folder / "sandbox_images").symlink_to(REPO / "sandbox_images")  # next to courses/, as in the repository
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="aifhub-service", daemon=True)
        self.thread.start()
        self.svc = self.call(self._start())
        self.url = self.svc.url
        self.learner_token = self.svc.token(learner)
        self.instructor_token = self.svc.token(INSTRUCTOR)

    async def _start(self):
        svc = InProcessService(self.folder, courses=self.courses_dir, demo=False)
        svc.grading.workers = 1
        await svc.start()
        await svc.grading.start()
        return svc

    def call(self, coro, timeout=300):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self):
        try:
            self.call(self.svc.stop(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    # -- the instructor's steps, through the REST API -------------------------

    def instructor(self, method, path, **kw):
        """``method path`` as the course's instructor; the answer's JSON, or AssertionError with the refusal."""
        resp = self.call(self.svc.api(method, path, self.instructor_token, **kw))
        assert resp.code < 300, f"aifhub refused {method} {path}: {resp.code} {resp.body[:500]!r}"
        return resp.json()

    def release(self, course, assignment, source):
        """``source`` (a folder of notebooks nbgrader would generate from) becomes the course's
        ``source/<assignment>/``; the service generates the student version and releases it."""
        dest = self.courses_dir / course / "source" / assignment
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(source, dest)
        return self.instructor("POST", f"courses/{course}/assignments/{assignment}/release")

    def collect(self, course, assignment):
        return self.instructor("POST", f"courses/{course}/assignments/{assignment}/collect")

    def autograde(self, course, assignment, timeout=300):
        """Queue every collected submission and wait for the jobs; AssertionError if one failed."""
        jobs = self.instructor("POST", f"courses/{course}/assignments/{assignment}/autograde")["jobs"]
        ids = "&".join(f"id={j['id']}" for j in jobs)
        deadline = time.monotonic() + timeout
        while jobs:
            jobs = self.instructor("GET", f"courses/{course}/jobs?{ids}")["jobs"]
            if all(j["state"] in ("done", "failed") for j in jobs):
                failed = [j for j in jobs if j["state"] == "failed"]
                assert not failed, f"autograding failed: {failed}"
                return jobs
            assert time.monotonic() < deadline, f"autograding did not finish in {timeout} s: {jobs}"
            time.sleep(0.2)
        return jobs

    def release_feedback(self, course, assignment):
        return self.instructor("POST", f"courses/{course}/assignments/{assignment}/feedback")

    # -- what the service keeps ----------------------------------------------

    def grading_dir(self, course):
        return self.svc.grading.root / course

    def submissions(self, course):
        """Every hand-in of ``course``: ``(hub user, student id, assignment, timestamp, folder)``, oldest first."""
        from aifhub.grading.models import Submission
        from aifhub.grading.students import student_id
        from sqlalchemy import select

        def read(s):
            rows = s.scalars(select(Submission).where(Submission.course_id == course).order_by(Submission.id))
            return [(r.student, student_id(s, r.student), r.assignment_id, r.timestamp, r.folder) for r in rows]

        return self.svc.db.call(read)
