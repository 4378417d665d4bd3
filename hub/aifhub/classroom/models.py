"""Tables of the live workshop: raised hands, the audit log of help given, and instructors' announcements."""

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..state.base import Base, UTCDateTime, utcnow


class Hand(Base):
    """A learner's raised hand in a course, from raising to closing.

    ``state``: ``raised`` (waiting), ``taken`` (a helper is coming: ``helper``), ``asked`` (the helper asks to
    look inside the learner's sandbox), ``shared`` (the learner accepted: the helper may use the server
    ``server_name`` until ``share_until``), ``closed`` (``close_reason`` says why). One live hand per learner
    and course; the id orders the queue.
    """

    __tablename__ = "classroom_hands"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    course_id: Mapped[str] = mapped_column(String(64))
    user: Mapped[str] = mapped_column(String(255))
    question: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16), default="raised")
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    helper: Mapped[str | None] = mapped_column(String(255), nullable=True)
    taken_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    server_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    share_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # the helper opened the server
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    close_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)

    __table_args__ = (Index("ix_classroom_hands_course_state", "course_id", "state"),)


class AuditEntry(Base):
    """One step of help given: a hand raised, taken, a look asked for, the learner's consent, the access granted,
    used and ended. Readable by the learner concerned, the course's instructors and admins."""

    __tablename__ = "classroom_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    course_id: Mapped[str] = mapped_column(String(64))
    hand_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    learner: Mapped[str] = mapped_column(String(255))
    actor: Mapped[str] = mapped_column(String(255))  # who did it ("aifhub" for the time limit)
    action: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_classroom_audit_course", "course_id", "learner"),)


class Announcement(Base):
    """An instructor's message to a course's learners (or to those of one scheduled session: ``session``, its
    index in the course's ``sessions``)."""

    __tablename__ = "classroom_announcements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    course_id: Mapped[str] = mapped_column(String(64))
    session: Mapped[int | None] = mapped_column(Integer, nullable=True)
    author: Mapped[str] = mapped_column(String(255))
    text: Mapped[str] = mapped_column(Text)
    posted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_classroom_announcements_course", "course_id"),)
