"""Tables of credentials, instructors' sign-offs, and what learners declare for the training report."""

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..state.base import Base, UTCDateTime, utcnow


class Credential(Base):
    """One Open Badge issued to one learner for one course; the signed document is kept as issued."""

    __tablename__ = "credentials"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # a UUID: the credential's urn:uuid
    user: Mapped[str] = mapped_column(String(255))
    course_id: Mapped[str] = mapped_column(String(64))
    status_index: Mapped[int] = mapped_column(Integer, unique=True)  # its bit in the status list
    # the status list it is on: the signing key's fingerprint (each key signs its own list, so a verifier's
    # check that the list and the credential have one issuer holds across did:key rotations)
    status_list: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    revoke_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    document: Mapped[str] = mapped_column(Text)  # the signed credential, JSON, byte for byte as issued

    __table_args__ = (Index("ix_credentials_user_course", "user", "course_id"),)


class SignOff(Base):
    """An instructor's sign-off of a learner in a course (completion rules with ``sign_off: true``)."""

    __tablename__ = "completion_signoffs"

    course_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(255), primary_key=True)
    signed_by: Mapped[str] = mapped_column(String(255))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TraineeProfile(Base):
    """What a learner chose to declare for the training report (each field optional; deletable)."""

    __tablename__ = "trainee_profiles"

    user: Mapped[str] = mapped_column(String(255), primary_key=True)
    country: Mapped[str | None] = mapped_column(String(2), nullable=True)  # ISO 3166-1 alpha-2
    sector: Mapped[str | None] = mapped_column(String(32), nullable=True)
    gender: Mapped[str | None] = mapped_column(String(32), nullable=True)
    declared_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
