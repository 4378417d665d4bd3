"""SQLAlchemy models of the service's state. Changes go through alembic migrations."""

from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..state.base import Base, UTCDateTime, utcnow


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
    # admitted, but the sandbox waits for the cluster (a pending pod): it holds, nothing is charged until it runs
    pending: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(Text, nullable=True)

    # what pays and how fast it burns (GPU weight in millionths x device count; CPU cores in thousandths)
    allocation_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    gpu_count: Mapped[int] = mapped_column(Integer, default=0)
    cpu_millis: Mapped[int] = mapped_column(Integer, default=1000)
    max_session_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # the hold placed at admission, and what has been charged so far (integer GPU/CPU-milliseconds)
    hold_gpu_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    hold_cpu_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    charged_gpu_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    charged_cpu_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    last_charged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # set when the service decides to stop the sandbox: nothing after it is charged
    charge_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # enforcement: the highest warning shown (80, 90), and why the sandbox was stopped
    warned_percent: Mapped[int] = mapped_column(Integer, default=0)
    stop_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # the idle rule: when the learner was warned that the idle sandbox will stop
    idle_warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # GPU telemetry: wall time (ms) the session's GPU sat idle while charged; the pod running it ("namespace/name")
    gpu_idle_ms: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    pod: Mapped[str | None] = mapped_column(String(320), nullable=True)

    claims: Mapped[list["GpuClaim"]] = relationship(back_populates="session", cascade="all, delete-orphan")

    __table_args__ = (
        Index("ix_sessions_active", "state", "user", "server_name"),
        Index("ix_sessions_course_user", "course_id", "user", "started_at"),
        Index("ix_sessions_allocation", "allocation_id", "state"),
    )

    @property
    def devices(self):
        return sorted((c.device_id for c in self.claims), key=lambda d: (len(d), d))


class GpuClaim(Base):
    """A device held by a running session. The primary key makes a device exclusive."""

    __tablename__ = "gpu_claims"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sandbox_sessions.id", ondelete="CASCADE"))
    session: Mapped[SandboxSession] = relationship(back_populates="claims")


class WaitlistEntry(Base):
    """A learner waiting for a GPU of the local pool: in line (``waiting``), offered held devices
    (``offered``, until ``expires_at``), then ``admitted``, ``left`` or ``expired``. The id orders arrivals."""

    __tablename__ = "waitlist"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[str] = mapped_column(String(255))
    server_name: Mapped[str] = mapped_column(String(255), default="")
    course_id: Mapped[str] = mapped_column(String(64))
    gpu_kind: Mapped[str] = mapped_column(String(64))
    gpu_count: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[str] = mapped_column(String(16), default="waiting")
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    offered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    held_devices: Mapped[str] = mapped_column(String(255), default="")  # comma list, while offered

    __table_args__ = (Index("ix_waitlist_state", "state", "gpu_kind"),)

    @property
    def devices(self):
        return [d for d in self.held_devices.split(",") if d]


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


class Allocation(Base):
    """An allocation record: the granted project that pays for training GPU-hours."""

    __tablename__ = "allocations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(255), default="")
    access_call: Mapped[str] = mapped_column(String(128), default="")
    owner: Mapped[str] = mapped_column(String(255), default="")
    granted_gpu_ms: Mapped[int] = mapped_column(BigInteger)
    start_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    end_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | closed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AllocationChange(Base):
    """Every change of an allocation's grant or status, for the record."""

    __tablename__ = "allocation_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    allocation_id: Mapped[str] = mapped_column(ForeignKey("allocations.id"))
    action: Mapped[str] = mapped_column(String(16))  # create | topup | close
    delta_gpu_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    note: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GpuRate(Base):
    """The rate card: GPU-hours charged per device-hour of a kind, from a date on (history is never rewritten)."""

    __tablename__ = "gpu_rates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    weight_ppm: Mapped[int] = mapped_column(Integer)  # 1_000_000 = one full GPU
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("kind", "effective_from", name="uq_rate"),)


class UsageEvent(Base):
    """One charge of one session: the time from ``start_at`` to ``end_at``. (session, seq) is unique."""

    __tablename__ = "usage_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sandbox_sessions.id"))
    seq: Mapped[int] = mapped_column(Integer)
    user: Mapped[str] = mapped_column(String(255))
    course_id: Mapped[str] = mapped_column(String(64))
    allocation_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    gpu_kind: Mapped[str | None] = mapped_column(String(64), nullable=True)
    start_at: Mapped[datetime] = mapped_column(UTCDateTime)
    end_at: Mapped[datetime] = mapped_column(UTCDateTime)
    gpu_ms: Mapped[int] = mapped_column(BigInteger)
    cpu_ms: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint("session_id", "seq", name="uq_event_seq"),
        Index("ix_events_allocation_end", "allocation_id", "end_at"),
    )
