"""The GPU waitlist, and when a session was warned that its idle sandbox will stop.

Revision ID: 0007
Revises: 0010
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "waitlist",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("server_name", sa.String(255), nullable=False),
        sa.Column("course_id", sa.String(64), nullable=False),
        sa.Column("gpu_kind", sa.String(64), nullable=False),
        sa.Column("gpu_count", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("joined_at", sa.DateTime, nullable=False),
        sa.Column("offered_at", sa.DateTime, nullable=True),
        sa.Column("expires_at", sa.DateTime, nullable=True),
        sa.Column("ended_at", sa.DateTime, nullable=True),
        sa.Column("held_devices", sa.String(255), nullable=False),
    )
    op.create_index("ix_waitlist_state", "waitlist", ["state", "gpu_kind"])
    with op.batch_alter_table("sandbox_sessions") as batch:
        batch.add_column(sa.Column("idle_warned_at", sa.DateTime, nullable=True))


def downgrade():
    with op.batch_alter_table("sandbox_sessions") as batch:
        batch.drop_column("idle_warned_at")
    op.drop_index("ix_waitlist_state", "waitlist")
    op.drop_table("waitlist")
