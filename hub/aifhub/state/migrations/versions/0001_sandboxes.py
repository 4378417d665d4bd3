"""Sandbox sessions, GPU claims, learner uids and enrolments.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "sandbox_sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("server_name", sa.String(255), nullable=False),
        sa.Column("course_id", sa.String(64), nullable=False),
        sa.Column("gpu_kind", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime, nullable=True),
        sa.Column("end_reason", sa.Text, nullable=True),
    )
    op.create_index("ix_sessions_active", "sandbox_sessions", ["state", "user", "server_name"])
    op.create_table(
        "gpu_claims",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("session_id", sa.Integer, sa.ForeignKey("sandbox_sessions.id", ondelete="CASCADE"), nullable=False),
    )
    op.create_table(
        "learner_uids",
        sa.Column("user", sa.String(255), primary_key=True),
        sa.Column("uid", sa.Integer, nullable=False, unique=True),
    )
    op.create_table(
        "enrollments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("course_id", sa.String(64), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("user", "course_id", name="uq_enrollment"),
    )


def downgrade():
    op.drop_table("enrollments")
    op.drop_table("learner_uids")
    op.drop_table("gpu_claims")
    op.drop_index("ix_sessions_active", "sandbox_sessions")
    op.drop_table("sandbox_sessions")
