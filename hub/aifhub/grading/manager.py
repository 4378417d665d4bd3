"""The service's grading, as the service's handlers, pages, LTI tool and tests reach it: one facade over the
parts of :mod:`aifhub.grading`, each a concept of its own.

* :mod:`.settings`: every option (:class:`~.settings.GradingSettings`; :class:`GradingManager` subclasses it, so
  the options keep their ``GradingManager.<name>`` spelling in users' configurations);
* :mod:`.courses`: a course's directory, group, gradebook and sharing, learners' nbgrader ids, the start-up
  migration of course directories (:class:`~.courses.CourseSetup`);
* :mod:`.steps`: instructors' steps, run in the step worker (:class:`~.steps.InstructorSteps`);
* :mod:`.exchange`: the exchange's store, learners' side (:class:`~.exchange.ExchangeStore`);
* :mod:`.queue`: the autograding queue, handed the settings, the course set-up and a GPU broker (the service's
  admission) instead of this facade.

Handlers (:mod:`aifhub.service.grading_api`) check who may do what; the parts do it. The service's composition
root (:mod:`aifhub.service.wiring`) makes the facade; it makes its parts, connected as listed above.
"""

import asyncio
import logging

from ..kube.settings import KubeSettings
from .courses import ROOT_FILES, UNSHARED, CourseSetup
from .exchange import TIMESTAMP_FORMAT, ExchangeStore
from .queue import GradingQueue
from .settings import GradingSettings, network_mode_default
from .steps import InstructorSteps
from .workers import StepWorker

log = logging.getLogger(__name__)

# the names this module had before its parts moved out (kept for imports of them)
__all__ = ["GradingManager", "network_mode_default", "ROOT_FILES", "UNSHARED", "TIMESTAMP_FORMAT"]


class GradingManager(GradingSettings):
    """Per-course nbgrader directories, the trusted exchange's storage, and the autograding queue."""

    def __init__(self, state_dir, db, core=None, isolated=None, kube=None, gpus=None, **kw):
        """``core``: the service's catalog and membership (None: offline tools and tests); ``kube``: the cluster's
        settings (the wiring passes the one the placeholders share); ``gpus``: the queue's GPU broker (default: the
        core's admission)."""
        super().__init__(state_dir, db.url if db is not None else "", isolated, **kw)
        self.db = db
        self.core = core
        # where grading Jobs run (shared with the placeholders: the service's wiring passes its one KubeSettings)
        self.kube = kube if kube is not None else KubeSettings(parent=self)
        self.worker = StepWorker(self)
        self.courses = CourseSetup(self, db, core, self.worker)
        if gpus is None and core is not None:
            gpus = core.admission
        self.queue = GradingQueue(self, db, self.courses, self.kube, gpus)
        self.instructor = InstructorSteps(db, self.courses, self.worker, wake=self.queue.wake)
        self.exchange = ExchangeStore(self, db, self.courses)
        self.after_feedback = self.instructor.after_feedback  # e.g. LMS grade passback (the LTI tool adds it)

    # -- course set-up: who may do what, a course's directory, group and gradebook ---------------------------

    def course(self, course_id):
        return self.courses.course(course_id)

    async def role(self, course, user, admin):
        return await self.courses.role(course, user, admin)

    def dir(self, course_id):
        return self.courses.dir(course_id)

    def course_gid(self, course_id):
        return self.courses.course_gid(course_id)

    async def group_id(self, course_id):
        return await self.courses.group_id(course_id)

    def _setup_gradebook(self, course_id):
        return self.courses._setup_gradebook(course_id)

    async def gradebook_url(self, course_id):
        return await self.courses.gradebook_url(course_id)

    def share(self, course_id):
        return self.courses.share(course_id)

    async def student_id(self, user):
        return await self.courses.student_id(user)

    def _move_old_course_dirs(self):
        return self.courses._move_old_course_dirs()

    # -- instructors' steps --------------------------------------------------------------------------------------

    async def release(self, course_id, assignment):
        return await self.instructor.release(course_id, assignment)

    async def collect(self, course_id, assignment):
        return await self.instructor.collect(course_id, assignment)

    async def autograde(self, course_id, assignment, requested_by="", students=None):
        return await self.instructor.autograde(course_id, assignment, requested_by, students)

    async def jobs(self, course_id, assignment=None, ids=None):
        return await self.instructor.jobs(course_id, assignment, ids)

    async def release_feedback(self, course_id, assignment):
        return await self.instructor.release_feedback(course_id, assignment)

    async def grades(self, course_id):
        return await self.instructor.grades(course_id)

    grades_csv = staticmethod(InstructorSteps.grades_csv)

    # -- the exchange, learners' side ----------------------------------------------------------------------------

    def released(self, course_id):
        return self.exchange.released(course_id)

    async def listing(self, course_id, student):
        return await self.exchange.listing(course_id, student)

    def assignment_archive(self, course_id, assignment):
        return self.exchange.assignment_archive(course_id, assignment)

    async def submit(self, course_id, assignment, student, data):
        return await self.exchange.submit(course_id, assignment, student, data)

    async def submissions(self, course_id, assignment=None, student=None):
        return await self.exchange.submissions(course_id, assignment, student)

    async def feedback(self, course_id, assignment, student):
        return await self.exchange.feedback(course_id, assignment, student)

    async def feedback_html(self, course_id, assignment, student, notebook):
        return await self.exchange.feedback_html(course_id, assignment, student, notebook)

    # -- start and stop ------------------------------------------------------------------------------------------

    async def start(self):
        """Prepare the grading folder (and move old course directories in), then start the queue's workers on the
        running event loop (they start their processes on first use)."""
        await asyncio.to_thread(self.courses.prepare_root)
        await self.queue.start()

    async def stop(self):
        await self.queue.stop()
        await self.worker.kill()
