"""The service's lease on the state database: who writes it now.

The running service renews its lease every few seconds; the CLI's offline writes refuse while a lease
is fresh (they would race the service's own transactions and its in-memory view), wherever the
database is (a SQLite file in the state directory, or PostgreSQL through ``AIFHUB_DB_URL``).
"""

import os
import socket
from datetime import datetime, timedelta

from sqlalchemy import String, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, UTCDateTime, utcnow

NAME = "aifhub-service"
RENEW_S = 10  # the service renews this often
TTL_S = 35  # a lease not renewed for this long belongs to a service that died


class ServiceLease(Base):
    __tablename__ = "service_lease"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    renewed_at: Mapped[datetime] = mapped_column(UTCDateTime)


def me():
    return f"{socket.gethostname()} pid {os.getpid()}"


def renew(s, holder, now=None):
    row = s.get(ServiceLease, NAME)
    if row is None:
        s.add(ServiceLease(name=NAME, holder=holder, renewed_at=now or utcnow()))
    else:
        row.holder, row.renewed_at = holder, now or utcnow()


def give_up(s, holder):
    s.execute(delete(ServiceLease).where(ServiceLease.name == NAME, ServiceLease.holder == holder))


def live_holder(s, now=None):
    """Who holds a fresh lease (``"host pid N"``), or None."""
    row = s.scalar(select(ServiceLease).where(ServiceLease.name == NAME))
    if row is None or row.renewed_at < (now or utcnow()) - timedelta(seconds=TTL_S):
        return None
    return row.holder
