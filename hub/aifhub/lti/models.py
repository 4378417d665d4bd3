"""Tables of the LTI 1.3 link with an LMS: course links, learners' LMS identities, line items and scores.

A **link** ties one LMS course (issuer, deployment, context) to one aifhub course, with the AGS and
NRPS endpoints its launches announced. A **score** is one learner's grade for one assignment as it is
to be sent (or was sent) to the link's line item: unique per grade, so nothing is sent twice.
"""

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..state.base import Base, UTCDateTime, utcnow

SCORE_STATES = ("pending", "sent", "failed")


class LtiLink(Base):
    __tablename__ = "lti_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer: Mapped[str] = mapped_column(String(255))
    client_id: Mapped[str] = mapped_column(String(255))
    deployment_id: Mapped[str] = mapped_column(String(255))
    context_id: Mapped[str] = mapped_column(String(255))
    context_title: Mapped[str] = mapped_column(Text, default="")
    course_id: Mapped[str] = mapped_column(String(64))
    lineitems_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    memberships_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    roster_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    roster_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("issuer", "deployment_id", "context_id", name="uq_lti_link"),
        Index("ix_lti_links_course", "course_id"),
    )

    def to_dict(self):
        iso = lambda t: t.isoformat() if t else None  # noqa: E731
        return {
            "id": self.id,
            "issuer": self.issuer,
            "deployment_id": self.deployment_id,
            "context_id": self.context_id,
            "context_title": self.context_title,
            "course_id": self.course_id,
            "ags": bool(self.lineitems_url),
            "nrps": bool(self.memberships_url),
            "roster_synced_at": iso(self.roster_synced_at),
            "roster_error": self.roster_error,
        }


class LtiUser(Base):
    """Who an aifhub user is in an LMS: the ``sub`` of their launches, the ``user_id`` of NRPS and AGS."""

    __tablename__ = "lti_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer: Mapped[str] = mapped_column(String(255))
    lti_user_id: Mapped[str] = mapped_column(String(255))
    user: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("issuer", "lti_user_id", name="uq_lti_user"), Index("ix_lti_users_user", "user"))


class LtiLineItem(Base):
    """The LMS line item (gradebook column) of one assignment in one linked course, created once."""

    __tablename__ = "lti_lineitems"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    link_id: Mapped[int] = mapped_column(ForeignKey("lti_links.id", ondelete="CASCADE"))
    assignment_id: Mapped[str] = mapped_column(String(128))
    url: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("link_id", "assignment_id", name="uq_lti_lineitem"),)


class LtiScore(Base):
    """One grade to pass back: pending (with its next attempt), sent, or failed (shown to instructors)."""

    __tablename__ = "lti_scores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    link_id: Mapped[int] = mapped_column(ForeignKey("lti_links.id", ondelete="CASCADE"))
    assignment_id: Mapped[str] = mapped_column(String(128))
    user: Mapped[str] = mapped_column(String(255))
    lti_user_id: Mapped[str] = mapped_column(String(255))
    score: Mapped[float] = mapped_column(Float)
    max_score: Mapped[float] = mapped_column(Float)
    graded_at: Mapped[str] = mapped_column(String(64))  # the submission's nbgrader timestamp
    fingerprint: Mapped[str] = mapped_column(String(128))  # score/max@timestamp: the same grade is one row
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        UniqueConstraint("link_id", "assignment_id", "user", "fingerprint", name="uq_lti_score"),
        Index("ix_lti_scores_due", "state", "next_attempt_at"),
    )

    def to_dict(self):
        iso = lambda t: t.isoformat() if t else None  # noqa: E731
        return {
            "id": self.id,
            "assignment_id": self.assignment_id,
            "user": self.user,
            "score": self.score,
            "max_score": self.max_score,
            "graded_at": self.graded_at,
            "state": self.state,
            "attempts": self.attempts,
            "next_attempt_at": iso(self.next_attempt_at),
            "last_error": self.last_error,
            "sent_at": iso(self.sent_at),
        }
