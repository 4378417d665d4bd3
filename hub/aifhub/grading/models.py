"""Tables of the grading side: submissions received through the exchange and grading jobs."""

from datetime import datetime

from sqlalchemy import Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..state.base import Base, UTCDateTime, utcnow

JOB_STATES = ("queued", "running", "done", "failed")


class Submission(Base):
    """One hand-in of one assignment by one learner, as the service received it."""

    __tablename__ = "grading_submissions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    course_id: Mapped[str] = mapped_column(String(64))
    assignment_id: Mapped[str] = mapped_column(String(128))
    student: Mapped[str] = mapped_column(String(255))
    timestamp: Mapped[str] = mapped_column(String(64))  # nbgrader's timestamp text, set by the service
    folder: Mapped[str] = mapped_column(String(64))  # name of the folder under exchange/inbound/<student>/<assignment>/
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_grading_submissions_lookup", "course_id", "assignment_id", "student"),)

    def to_dict(self):
        return {
            "course_id": self.course_id,
            "assignment_id": self.assignment_id,
            "student_id": self.student,
            "timestamp": self.timestamp,
            "size_bytes": self.size_bytes,
            "received_at": self.received_at.isoformat() if self.received_at else None,
        }


class GradingJob(Base):
    """Autograding of one collected submission: queued, running, then done or failed (with why)."""

    __tablename__ = "grading_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    course_id: Mapped[str] = mapped_column(String(64))
    assignment_id: Mapped[str] = mapped_column(String(128))
    student: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    requested_by: Mapped[str] = mapped_column(String(255), default="")
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    # failed: timeout | out-of-memory | kernel-died | error; done: notes such as a cell timeout
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        Index("ix_grading_jobs_state", "state", "id"),
        Index("ix_grading_jobs_course", "course_id", "assignment_id"),
    )

    def to_dict(self):
        iso = lambda t: t.isoformat() if t else None  # noqa: E731
        return {
            "id": self.id,
            "course_id": self.course_id,
            "assignment_id": self.assignment_id,
            "student_id": self.student,
            "state": self.state,
            "attempts": self.attempts,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "score": self.score,
            "max_score": self.max_score,
            "reason": self.reason,
            "detail": self.detail,
        }


class GradingCourse(Base):
    """A course's grading group (instructors' sandboxes join it for formgrader) and its gradebook's URL.

    The group id is allocated once and kept; the gradebook URL is the service's own record (the copy in
    the course directory, for formgrader, is rewritten from it and never read back).
    """

    __tablename__ = "grading_courses"

    course_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    gid: Mapped[int] = mapped_column(Integer, unique=True)
    gradebook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GradingStudent(Base):
    """The id under which a hub user is a student in nbgrader (folders, gradebook): allocated once, kept.

    A user name that is a plain name nobody holds yet is its own id; any other (``alice@uni.edu``, a
    name that is taken) gets a plain name derived from it with a hash (see :mod:`.students`).
    """

    __tablename__ = "grading_students"

    user: Mapped[str] = mapped_column(String(255), primary_key=True)
    student_id: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
