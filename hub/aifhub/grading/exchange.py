"""The trusted exchange's store, on the service's side: what learners see released, their hand-ins (checked
for size, count and rate, then unpacked safely), and their released feedback.

Learners never write the course directory: :class:`ExchangeStore` writes a hand-in below
``exchange/inbound/<student>/<assignment>/<stamp>/`` (under a hidden name until complete) and records it in
``submissions``; collecting it into nbgrader's ``submitted/`` is an instructor's step (:mod:`.steps`). The tar and
file code it uses is :mod:`.store`.
"""

import asyncio
import logging
import stat
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select

from .. import fsafe
from ..errors import Refusal
from .coursedir import GradingDir, check_name
from .models import Submission
from .store import TooLarge, TooMany, human_size, md5, pack, read_folder, read_text, unpack

log = logging.getLogger(__name__)

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f %Z"


class ExchangeStore:
    """Releases, hand-ins and feedback as learners reach them (the handlers check who may)."""

    def __init__(self, settings, db, courses):
        self.settings = settings
        self.db = db
        self.courses = courses  # CourseSetup: a course's directory, learners' nbgrader ids
        self._submit_locks = {}  # (course id, student) -> lock: one hand-in at a time per learner

    def released(self, course_id):
        try:
            outbound = GradingDir(self.settings.root, course_id).open_below("exchange", "outbound")
        except (FileNotFoundError, fsafe.UnsafePath):
            return []
        out = []
        with outbound:
            for name, st in outbound.entries():
                if not stat.S_ISDIR(st.st_mode) or name.startswith("."):
                    continue
                with outbound.sub(name) as a:
                    notebooks = sorted(
                        n[:-6] for n, nst in a.entries() if n.endswith(".ipynb") and stat.S_ISREG(nst.st_mode)
                    )
                out.append({"assignment_id": name, "notebooks": notebooks})
        return out

    async def listing(self, course_id, student):
        """Released assignments, with ``student``'s submissions and released feedback."""
        subs = await self.db.run(
            lambda s: list(
                s.scalars(
                    select(Submission)
                    .where(Submission.course_id == course_id, Submission.student == student)
                    .order_by(Submission.id)
                )
            )
        )
        try:
            sid = await self.courses.student_id(student)
        except Refusal:  # a name nbgrader cannot know (over the hub's length): nothing of theirs to show
            sid = None
        return await asyncio.to_thread(self._listing, course_id, sid, subs)

    def _listing(self, course_id, student, subs):
        """``student``: the learner's student id (their feedback's folder)."""
        gd = GradingDir(self.settings.root, course_id)
        out = []
        for entry in self.released(course_id):
            a = entry["assignment_id"]
            entry["submissions"] = [{"timestamp": x.timestamp} for x in subs if x.assignment_id == a]
            entry["feedback"] = self._feedback_index(gd, student, a) if student else None
            out.append(entry)
        return out

    @staticmethod
    def _feedback_index(gd, student, assignment):
        folder = gd.released_feedback(student, assignment)
        stamp = read_text(folder / "timestamp.txt", gd.root)
        if stamp is None:
            return None
        return {
            "timestamp": stamp.strip(),
            "notebooks": {name[:-5]: md5(data) for name, data in read_folder(folder, "*.html", gd.root).items()},
        }

    def assignment_archive(self, course_id, assignment):
        gd = GradingDir(self.settings.root, course_id)
        try:
            return pack(gd.outbound(assignment), gd.root)
        except (FileNotFoundError, fsafe.UnsafePath):
            raise Refusal("not-released", f"The assignment '{assignment}' of {course_id} has not been released.")

    def _store_submission(self, course_id, assignment, student, data, stamp):
        """Unpack a hand-in into ``exchange/inbound/<student>/<assignment>/<stamp>/``: under a hidden
        temporary name first, renamed into place when complete; nothing is left of a refused one."""
        gd = self.courses.dir(course_id)
        gd.inbound(student, assignment)  # checks the names
        folder = stamp.strftime("%Y%m%dT%H%M%S%f")
        limit = self.settings.size_limit(course_id)
        with gd.open_below("exchange", "inbound") as inbound, inbound.makedirs((student, assignment)) as base:
            if base.lstat(folder) is not None:
                raise Refusal("same-timestamp", "A submission with the same timestamp exists; hand in again.")
            tmp = f".{folder}.new"
            base.remove(tmp)
            try:
                size = unpack(data, base, tmp, limit, self.settings.max_submission_files)
            except TooLarge as exc:
                raise Refusal("too-large", f"Submission refused: {exc}.")
            except TooMany as exc:
                raise Refusal("too-large", f"Submission refused: {exc}.")
            except ValueError as exc:
                raise Refusal("bad-submission", f"Submission refused: {exc}.")
            base.rename(tmp, folder)
        return folder, size

    async def check_submission_rate(self, course_id, assignment, student, now):
        """429 when ``student`` handed in ``assignment`` too often lately, or as often as the course keeps."""

        def counts(s):
            q = (
                select(func.count())
                .select_from(Submission)
                .where(
                    Submission.course_id == course_id,
                    Submission.assignment_id == assignment,
                    Submission.student == student,
                )
            )
            return s.scalar(q), s.scalar(q.where(Submission.received_at >= now - timedelta(minutes=1)))

        kept, recent = await self.db.run(counts)
        if kept >= self.settings.max_submissions:
            raise Refusal(
                "too-many",
                f"Submission refused: you have handed in {assignment} {kept} times, the most this "
                f"course keeps ({self.settings.max_submissions}). Ask an instructor if you need another.",
            )
        if recent >= self.settings.submissions_per_minute:
            raise Refusal(
                "too-many",
                f"Submission refused: you handed in {assignment} {recent} times in the last "
                f"minute (at most {self.settings.submissions_per_minute}); wait a minute and hand in again.",
            )

    async def submit(self, course_id, assignment, student, data):
        """Hand in ``data`` (tar.gz) as the hub user ``student``."""
        check_name("assignment id", assignment)
        sid = await self.courses.student_id(student)
        if not (GradingDir(self.settings.root, course_id).outbound(assignment)).is_dir():
            raise Refusal("not-released", f"The assignment '{assignment}' of {course_id} has not been released.")
        limit = self.settings.size_limit(course_id)
        if len(data) > limit:
            raise Refusal(
                "too-large",
                f"Submission refused: it is {human_size(len(data))}, over this course's limit of {human_size(limit)}.",
            )
        lock = self._submit_locks.setdefault((course_id, student), asyncio.Lock())
        async with lock:  # one hand-in of a learner at a time: the counts below hold
            stamp = datetime.now(timezone.utc)
            await self.check_submission_rate(course_id, assignment, student, stamp)
            timestamp = stamp.strftime(TIMESTAMP_FORMAT)
            folder, size = await asyncio.to_thread(self._store_submission, course_id, assignment, sid, data, stamp)
            await self.db.run(
                lambda s: s.add(
                    Submission(
                        course_id=course_id,
                        assignment_id=assignment,
                        student=student,
                        timestamp=timestamp,
                        folder=folder,
                        size_bytes=size,
                        received_at=stamp,
                    )
                )
            )
        log.info("Submission of %s for %s/%s at %s (%d bytes)", student, course_id, assignment, timestamp, size)
        return {
            "course_id": course_id,
            "assignment_id": assignment,
            "student_id": student,
            "timestamp": timestamp,
            "size_bytes": size,
        }

    async def submissions(self, course_id, assignment=None, student=None):
        def read(s):
            q = select(Submission).where(Submission.course_id == course_id)
            if assignment:
                q = q.where(Submission.assignment_id == assignment)
            if student:
                q = q.where(Submission.student == student)
            return [x.to_dict() for x in s.scalars(q.order_by(Submission.id))]

        return await self.db.run(read)

    async def feedback(self, course_id, assignment, student):
        """The hub user ``student``'s released feedback for ``assignment``: timestamp and archive, or None."""
        return await asyncio.to_thread(self._feedback, course_id, assignment, await self.courses.student_id(student))

    async def feedback_html(self, course_id, assignment, student, notebook):
        """The hub user ``student``'s released feedback for one notebook (html bytes), or None."""
        gd = GradingDir(self.settings.root, course_id)
        folder = gd.released_feedback(await self.courses.student_id(student), assignment)
        return (await asyncio.to_thread(read_folder, folder, "*.html", gd.root)).get(f"{notebook}.html")

    def _feedback(self, course_id, assignment, student):
        gd = GradingDir(self.settings.root, course_id)
        folder = gd.released_feedback(student, assignment)
        stamp = read_text(folder / "timestamp.txt", gd.root)
        if stamp is None:
            return None
        return {"timestamp": stamp.strip(), "archive": pack(folder, gd.root)}
