"""SQLAlchemy models of the service's state. Changes go through alembic migrations."""

from datetime import datetime, timezone

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import DateTime, TypeDecorator


def utcnow():
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive ones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    pass


class SandboxSession(Base):
    """One run of one learner's sandbox for one course, from admission to stop."""

    __tablename__ = "sandbox_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[str] = mapped_column(String(255))
    server_name: Mapped[str] = mapped_column(String(255), default="")
    course_id: Mapped[str] = mapped_column(String(64))
    gpu_kind: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="active")  # active | ended
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(Text, nullable=True)

    claims: Mapped[list["GpuClaim"]] = relationship(back_populates="session", cascade="all, delete-orphan")

    __table_args__ = (Index("ix_sessions_active", "state", "user", "server_name"),)

    @property
    def devices(self):
        return sorted((c.device_id for c in self.claims), key=lambda d: (len(d), d))


class GpuClaim(Base):
    """A device held by a running session. The primary key makes a device exclusive."""

    __tablename__ = "gpu_claims"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sandbox_sessions.id", ondelete="CASCADE"))
    session: Mapped[SandboxSession] = relationship(back_populates="claims")


class LearnerUid(Base):
    """The unprivileged uid a learner's sandboxes run as when the hub runs as root."""

    __tablename__ = "learner_uids"

    user: Mapped[str] = mapped_column(String(255), primary_key=True)
    uid: Mapped[int] = mapped_column(Integer, unique=True)


class Enrollment(Base):
    """A learner's enrolment in a course made at run time (open or code enrolment, or an instructor's roster edit)."""

    __tablename__ = "enrollments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[str] = mapped_column(String(255))
    course_id: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))  # open | code | roster
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("user", "course_id", name="uq_enrollment"),)
