"""The GPU-hour ledger: allocations, rate card, holds and usage events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# weights in millionths of a full GPU; MIG slices by their compute share
DEFAULT_RATES = {
    "gpu": 1_000_000,
    "h100": 1_000_000,
    "h200": 1_000_000,
    "a100": 1_000_000,
    "gh200": 1_000_000,
    "l40s": 1_000_000,
    "mig-1g.10gb": 142_857,
    "mig-1g.12gb": 142_857,
    "mig-2g.20gb": 285_714,
    "mig-3g.40gb": 428_571,
    "mig-4g.40gb": 571_429,
    "mig-7g.80gb": 1_000_000,
}


def upgrade():
    with op.batch_alter_table("sandbox_sessions") as t:
        t.add_column(sa.Column("allocation_id", sa.String(64), nullable=True))
        t.add_column(sa.Column("gpu_count", sa.Integer, nullable=False, server_default="0"))
        t.add_column(sa.Column("cpu_millis", sa.Integer, nullable=False, server_default="1000"))
        t.add_column(sa.Column("max_session_s", sa.Integer, nullable=True))
        for name in ("hold_gpu_ms", "hold_cpu_ms", "charged_gpu_ms", "charged_cpu_ms"):
            t.add_column(sa.Column(name, sa.BigInteger, nullable=False, server_default="0"))
        t.add_column(sa.Column("seq", sa.Integer, nullable=False, server_default="0"))
        t.add_column(sa.Column("last_charged_at", sa.DateTime, nullable=True))
        t.add_column(sa.Column("charge_until", sa.DateTime, nullable=True))
        t.add_column(sa.Column("warned_percent", sa.Integer, nullable=False, server_default="0"))
        t.add_column(sa.Column("stop_reason", sa.Text, nullable=True))
    op.create_table(
        "allocations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("access_call", sa.String(128), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("granted_gpu_ms", sa.BigInteger, nullable=False),
        sa.Column("start_date", sa.Date, nullable=True),
        sa.Column("end_date", sa.Date, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "allocation_changes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("allocation_id", sa.String(64), sa.ForeignKey("allocations.id"), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("delta_gpu_ms", sa.BigInteger, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
    )
    rates = op.create_table(
        "gpu_rates",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("weight_ppm", sa.Integer, nullable=False),
        sa.Column("effective_from", sa.DateTime, nullable=False),
        sa.UniqueConstraint("kind", "effective_from", name="uq_rate"),
    )
    op.bulk_insert(
        rates, [{"kind": k, "weight_ppm": w, "effective_from": datetime(2000, 1, 1)} for k, w in DEFAULT_RATES.items()]
    )
    op.create_table(
        "usage_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("session_id", sa.Integer, sa.ForeignKey("sandbox_sessions.id"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("course_id", sa.String(64), nullable=False),
        sa.Column("allocation_id", sa.String(64), nullable=True),
        sa.Column("gpu_kind", sa.String(64), nullable=True),
        sa.Column("start_at", sa.DateTime, nullable=False),
        sa.Column("end_at", sa.DateTime, nullable=False),
        sa.Column("gpu_ms", sa.BigInteger, nullable=False),
        sa.Column("cpu_ms", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("session_id", "seq", name="uq_event_seq"),
    )
    op.create_index("ix_events_user_course_end", "usage_events", ["user", "course_id", "end_at"])
    op.create_index("ix_events_allocation_end", "usage_events", ["allocation_id", "end_at"])


def downgrade():
    op.drop_table("usage_events")
    op.drop_table("gpu_rates")
    op.drop_table("allocation_changes")
    op.drop_table("allocations")
    with op.batch_alter_table("sandbox_sessions") as t:
        for name in (
            "stop_reason",
            "warned_percent",
            "charge_until",
            "last_charged_at",
            "seq",
            "charged_cpu_ms",
            "charged_gpu_ms",
            "hold_cpu_ms",
            "hold_gpu_ms",
            "max_session_s",
            "cpu_millis",
            "gpu_count",
            "allocation_id",
        ):
            t.drop_column(name)
