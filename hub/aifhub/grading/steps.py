"""Instructors' steps, on the service's side: release, collect, autograde (queue the jobs), release the
feedback, and export the grades.

:class:`InstructorSteps` runs nbgrader's trusted steps in the step worker (:class:`~.workers.StepWorker`) on the
course set-up's directories (:mod:`.courses`); autograding only queues jobs and wakes the queue (:mod:`.queue`),
which grades them. The handlers check that the caller is the course's instructor first.
"""

import asyncio
import csv
import io
import logging
from pathlib import Path

from sqlalchemy import select

from .. import fsafe, texts
from ..auth.people import with_names
from ..errors import Refusal
from . import students as students_db
from .coursedir import check_name
from .models import GradingJob, Submission

log = logging.getLogger(__name__)


class InstructorSteps:
    """What an instructor does to a course's assignment, each step in the step worker."""

    def __init__(self, db, courses, worker, wake=lambda: None):
        self.db = db
        self.courses = courses  # CourseSetup
        self.worker = worker  # StepWorker
        self.wake = wake  # tells the queue that jobs are queued
        self.after_feedback = []  # async (course_id, assignment, released_to) hooks, e.g. LMS grade passback

    async def release(self, course_id, assignment):
        course = self.courses.course(course_id)
        check_name("assignment id", assignment)
        if not (Path(course.path) / "source" / assignment).is_dir():
            raise Refusal(
                "no-assignment",
                f"{course.title} has no assignment '{assignment}' (no source/{assignment}/ in the course folder).",
            )
        await asyncio.to_thread(self.courses.dir, course_id)
        answer = await self.worker.run(
            await self.courses.base_request(course_id)
            | {"op": "release", "assignment": assignment, "course_path": str(course.path)},
            f"Releasing {assignment}",
        )
        await asyncio.to_thread(self.courses.share, course_id)
        return {
            "course_id": course_id,
            "assignment_id": assignment,
            "released": True,
            "notebooks": answer.get("notebooks", []),
        }

    @staticmethod
    def _latest_submissions(s, course_id, assignment):
        rows = s.scalars(
            select(Submission)
            .where(Submission.course_id == course_id, Submission.assignment_id == assignment)
            .order_by(Submission.id)
        )
        latest = {}
        for row in rows:
            latest[row.student] = (row.folder, row.timestamp)
        return latest

    def _collect_files(self, course_id, assignment, latest):
        """``latest``: ``{student id: (folder, timestamp)}``: each learner's newest hand-in into ``submitted/``."""
        gd = self.courses.dir(course_id)
        with gd.open() as course, course.sub("submitted") as submitted:
            for student, (folder, timestamp) in latest.items():
                gd.inbound(student, assignment)  # checks the names

                def fill(d, student=student, folder=folder, timestamp=timestamp):
                    with gd.open_below("exchange", "inbound", student, assignment, folder) as src:
                        fsafe.copy_tree(src, d)
                    d.write("timestamp.txt", timestamp)

                with submitted.mkdir(student) as theirs:
                    theirs.replace_dir(assignment, fill)

    async def collect(self, course_id, assignment):
        self.courses.course(course_id)
        check_name("assignment id", assignment)
        latest = await self.db.run(self._latest_submissions, course_id, assignment)
        ids = await self.courses.student_ids(latest)
        by_id = {ids[user]: hand_in for user, hand_in in latest.items()}
        await asyncio.to_thread(self._collect_files, course_id, assignment, by_id)
        if latest:
            await self.worker.run(
                await self.courses.base_request(course_id) | {"op": "add_students", "students": sorted(by_id)},
                f"Collecting {assignment}",
            )
        await asyncio.to_thread(self.courses.share, course_id)
        return {"course_id": course_id, "assignment_id": assignment, "collected": sorted(latest)}

    async def autograde(self, course_id, assignment, requested_by="", students=None):
        """Queue a job for every collected submission (or those of ``students``); returns the jobs."""
        self.courses.course(course_id)
        check_name("assignment id", assignment)
        gd = await asyncio.to_thread(self.courses.dir, course_id)
        folder = gd.step("submitted")
        ids = await asyncio.to_thread(
            lambda: sorted(p.name for p in folder.iterdir() if (p / assignment).is_dir()) if folder.is_dir() else []
        )
        collected = sorted((await self.db.run(students_db.users_of, ids)).values())
        if students is not None:
            missing = sorted(set(students) - set(collected))
            if missing:
                named = ", ".join(texts.shown(x) for x in missing[:10]) + (
                    f" and {len(missing) - 10} more" if len(missing) > 10 else ""
                )
                raise Refusal("no-submission", f"No collected submission of {named} for {assignment}: collect first.")
            collected = sorted(students)

        def queue_jobs(s):
            jobs = []
            for student in collected:
                open_job = s.scalar(
                    select(GradingJob).where(
                        GradingJob.course_id == course_id,
                        GradingJob.assignment_id == assignment,
                        GradingJob.student == student,
                        GradingJob.state.in_(("queued", "running")),
                    )
                )
                if open_job is None:
                    open_job = GradingJob(
                        course_id=course_id,
                        assignment_id=assignment,
                        student=student,
                        state="queued",
                        requested_by=requested_by,
                    )
                    s.add(open_job)
                    s.flush()
                jobs.append(open_job.to_dict())
            return jobs

        jobs = await self.db.run(queue_jobs)
        self.wake()
        return {"course_id": course_id, "assignment_id": assignment, "jobs": jobs}

    async def jobs(self, course_id, assignment=None, ids=None):
        def read(s):
            q = select(GradingJob).where(GradingJob.course_id == course_id)
            if assignment:
                q = q.where(GradingJob.assignment_id == assignment)
            if ids:
                q = q.where(GradingJob.id.in_(list(ids)))
            return [j.to_dict() for j in s.scalars(q.order_by(GradingJob.id))]

        return await self.db.run(read)

    async def release_feedback(self, course_id, assignment):
        self.courses.course(course_id)
        check_name("assignment id", assignment)
        await asyncio.to_thread(self.courses.dir, course_id)
        answer = await self.worker.run(
            await self.courses.base_request(course_id) | {"op": "feedback", "assignment": assignment},
            f"Releasing the feedback on {assignment}",
        )
        await asyncio.to_thread(self.courses.share, course_id)
        users = sorted((await self.db.run(students_db.users_of, answer.get("students", []))).values())  # hub names
        for hook in self.after_feedback:
            try:
                await hook(course_id, assignment, users)
            except Exception:  # the feedback is out; a hook's failure is its own to report
                log.exception("After releasing the feedback of %s/%s", course_id, assignment)
        return {"course_id": course_id, "assignment_id": assignment, "released_to": users}

    async def grades(self, course_id):
        self.courses.course(course_id)
        await asyncio.to_thread(self.courses.dir, course_id)
        rows = (
            await self.worker.run(await self.courses.base_request(course_id) | {"op": "grades"}, "Exporting the grades")
        )["rows"]
        users = await self.db.run(students_db.users_of, {row["student_id"] for row in rows})
        rows = [row | {"student_id": users[row["student_id"]]} for row in rows]  # the hub's names
        return await self.db.run(with_names, rows, "student_id")  # and who they are, as their login said

    @staticmethod
    def grades_csv(rows):
        """The grades as CSV; a cell that would start a spreadsheet formula is quoted (:mod:`aifhub.texts`)."""
        out = io.StringIO()
        writer = csv.DictWriter(
            out,
            # name, email last: who the student is, where a login said (the columns before keep their places)
            ["student_id", "assignment_id", "timestamp", "score", "max_score", "submitted", "name", "email"],
            lineterminator="\n",
            restval="",
        )
        writer.writeheader()
        for row in rows:
            writer.writerow(texts.csv_row(row))
        return out.getvalue()
