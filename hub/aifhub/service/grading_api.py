"""REST of nbgrader courses: the trusted exchange (learners' sandboxes) and instructors' grading actions.

Every request is authenticated by JupyterHub (a sandbox presents its ``JUPYTERHUB_API_TOKEN``);
the caller's name comes from the hub, never from the request. Learners (roster or enrolled)
fetch released assignments, hand in as themselves and fetch their own feedback; instructors of
the course (``formgrade-<course>``) and admins release, collect, autograde, release feedback,
watch the queue and export grades.
"""

import asyncio

from tornado import web

from .. import texts
from ..grading.coursedir import check_name
from ..grading.students import MAX_USER
from ..errors import Refusal
from .base import APIHandler

ARCHIVE = "application/gzip"


class GradingHandler(APIHandler):
    @property
    def grading(self):
        return self.settings["aifhub_grading"]

    async def _course(self, course_id, need="learner"):
        """The course, after checking the caller's role in it (403 otherwise)."""
        try:
            course = self.grading.course(course_id)
        except Refusal:
            if not self.admin:  # do not tell strangers which courses exist
                raise web.HTTPError(403, f"You are not a member of the course {texts.shown(course_id)}.")
            raise
        role = await self.grading.role(course, self.user_name, self.admin)
        if role is None:
            raise web.HTTPError(403, f"You are not a member of {course.title} ({course.id}).")
        if need == "instructor" and role != "instructor":
            raise web.HTTPError(403, f"Only instructors of {course.title} may do this.")
        self.role = role
        return course

    def _names(self, **names):
        for kind, value in names.items():
            try:
                check_name(kind.replace("_", " "), value)
            except ValueError as exc:
                raise web.HTTPError(400, str(exc))

    def _student(self):
        """Whose files: the caller's, unless an instructor names a learner (?student=NAME)."""
        student = self.get_argument("student", None) or self.user_name
        if student != self.user_name and self.role != "instructor":
            raise web.HTTPError(403, f"You may only act as yourself ({self.user_name}), not as {texts.shown(student)}.")
        if len(student) > MAX_USER:
            raise web.HTTPError(400, f"A user name has at most {MAX_USER} characters.")
        return student

    def write_archive(self, data, name):
        self.set_header("Content-Type", ARCHIVE)
        self.set_header("Content-Disposition", f'attachment; filename="{name}.tar.gz"')
        self.finish(data)


class AssignmentsHandler(GradingHandler):
    """GET: released assignments, with the caller's (or ?student=) submissions and feedback."""

    @web.authenticated
    async def get(self, course_id):
        await self._course(course_id)
        student = self._student()
        self.write_json(
            {
                "course_id": course_id,
                "student_id": student,
                "assignments": await self.grading.listing(course_id, student),
            }
        )


class AssignmentFilesHandler(GradingHandler):
    """GET: the released assignment as tar.gz (fetch_assignment)."""

    @web.authenticated
    async def get(self, course_id, assignment):
        await self._course(course_id)
        self._names(assignment_id=assignment)
        self.write_archive(await asyncio.to_thread(self.grading.assignment_archive, course_id, assignment), assignment)


class SubmissionsHandler(GradingHandler):
    """POST: hand in (tar.gz body) as the caller; GET: submissions (instructors: all, learners: their own)."""

    def prepare(self):
        super().prepare()
        if self.request.method == "POST":
            length = int(self.request.headers.get("Content-Length") or 0)
            course_id = self.path_args[0] if self.path_args else ""
            limit = self.grading.size_limit(course_id)
            if length > limit:
                from ..grading.store import human_size

                raise Refusal(
                    "too-large",
                    f"Submission refused: it is {human_size(length)}, over this course's limit of {human_size(limit)}.",
                )

    @web.authenticated
    async def post(self, course_id, assignment):
        await self._course(course_id)
        self._names(assignment_id=assignment)
        student = self.get_argument("student", None) or self.user_name
        if student != self.user_name:  # nobody hands in for someone else, instructors included
            raise web.HTTPError(
                403, f"You may only hand in as yourself ({self.user_name}), not as {texts.shown(student)}."
            )
        self.write_json(await self.grading.submit(course_id, assignment, student, self.request.body), status=201)

    @web.authenticated
    async def get(self, course_id, assignment):
        await self._course(course_id)
        self._names(assignment_id=assignment)
        student = self.get_argument("student", None)
        if self.role != "instructor":
            student = self._student()
        self.write_json({"submissions": await self.grading.submissions(course_id, assignment, student)})


class FeedbackHandler(GradingHandler):
    """GET: the caller's released feedback (tar.gz; 404 when none). POST: instructors release feedback."""

    @web.authenticated
    async def get(self, course_id, assignment):
        await self._course(course_id)
        self._names(assignment_id=assignment)
        student = self._student()
        fb = await self.grading.feedback(course_id, assignment, student)
        if fb is None:
            raise web.HTTPError(404, f"No feedback has been released to {student} for {assignment} yet.")
        self.set_header("X-Aifhub-Timestamp", fb["timestamp"])
        self.write_archive(fb["archive"], f"{assignment}-feedback")

    @web.authenticated
    async def post(self, course_id, assignment):
        await self._course(course_id, need="instructor")
        self._names(assignment_id=assignment)
        self.write_json(await self.grading.release_feedback(course_id, assignment))


class ActionHandler(GradingHandler):
    """POST release | collect | autograde (instructors)."""

    @web.authenticated
    async def post(self, course_id, assignment, action):
        await self._course(course_id, need="instructor")
        self._names(assignment_id=assignment)
        if action == "release":
            result = await self.grading.release(course_id, assignment)
        elif action == "collect":
            result = await self.grading.collect(course_id, assignment)
        else:
            students = self.json_body().get("students")
            if students is not None and not (isinstance(students, list) and all(isinstance(x, str) for x in students)):
                raise web.HTTPError(400, 'Send {"students": ["name", ...]} (a list of user names), or no body for all.')
            result = await self.grading.autograde(course_id, assignment, requested_by=self.user_name, students=students)
        self.write_json(result, status=202 if action == "autograde" else 200)


class JobsHandler(GradingHandler):
    """GET: grading jobs of a course (or one assignment), with their state and why they failed."""

    @web.authenticated
    async def get(self, course_id, assignment=None):
        await self._course(course_id, need="instructor")
        ids = []
        for x in self.get_arguments("id"):
            if not x.isdigit() or int(x) >= 2**63:
                raise web.HTTPError(400, f"A job id is a whole number, got {texts.shown(x)}.")
            ids.append(int(x))
        self.write_json({"jobs": await self.grading.jobs(course_id, assignment, ids or None)})


class GradesHandler(GradingHandler):
    """GET: the course's grades, ?format=csv (default json)."""

    @web.authenticated
    async def get(self, course_id):
        await self._course(course_id, need="instructor")
        rows = await self.grading.grades(course_id)
        if self.get_argument("format", "json") == "csv":
            self.set_header("Content-Type", "text/csv")
            return self.finish(self.grading.grades_csv(rows))
        self.write_json({"course_id": course_id, "grades": rows})


def routes(route):
    course = r"courses/([a-z0-9-]+)"
    a = r"assignments/([A-Za-z0-9][A-Za-z0-9._-]*)"
    return [
        (route(f"api/v1/{course}/assignments"), AssignmentsHandler),
        (route(f"api/v1/{course}/{a}/files"), AssignmentFilesHandler),
        (route(f"api/v1/{course}/{a}/submissions"), SubmissionsHandler),
        (route(f"api/v1/{course}/{a}/feedback"), FeedbackHandler),
        (route(f"api/v1/{course}/{a}/(release|collect|autograde)"), ActionHandler),
        (route(f"api/v1/{course}/{a}/jobs"), JobsHandler),
        (route(f"api/v1/{course}/jobs"), JobsHandler),
        (route(f"api/v1/{course}/grades"), GradesHandler),
    ]
