"""What logins grant, as the service keeps it: instructor rights from claims or LMS roles.

Learners' course memberships from claims are ordinary :class:`~aifhub.ledger.models.Enrollment`
rows whose ``source`` names the login (``oidc``, ``lti``); instructors are here, as the course
file's ``instructors`` list is for the course's authors.
"""

from datetime import datetime

from sqlalchemy import Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..state.base import Base, UTCDateTime, utcnow


class CourseStaff(Base):
    """An instructor of a course granted by a login's claims (OIDC entitlement, LMS role or roster)."""

    __tablename__ = "course_staff"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[str] = mapped_column(String(255))
    course_id: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))  # oidc | lti
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("user", "course_id", "source", name="uq_course_staff"),)


class Person(Base):
    """Who a user name is, as their login last said: the ``name`` and ``email`` claims (OIDC) or the
    LMS's name and e-mail (LTI). User names stay the stable, opaque ids; these are shown beside them."""

    __tablename__ = "people"

    user: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    email: Mapped[str] = mapped_column(String(255), default="")
    source: Mapped[str] = mapped_column(String(16))  # oidc | lti
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
