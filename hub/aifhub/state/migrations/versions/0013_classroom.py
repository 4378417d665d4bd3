"""The live workshop: raised hands, the audit log of help given, instructors' announcements.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "classroom_hands",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("course_id", sa.String(64), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("raised_at", sa.DateTime, nullable=False),
        sa.Column("helper", sa.String(255), nullable=True),
        sa.Column("taken_at", sa.DateTime, nullable=True),
        sa.Column("server_name", sa.String(255), nullable=True),
        sa.Column("share_until", sa.DateTime, nullable=True),
        sa.Column("used_at", sa.DateTime, nullable=True),
        sa.Column("closed_at", sa.DateTime, nullable=True),
        sa.Column("close_reason", sa.String(32), nullable=True),
    )
    op.create_index("ix_classroom_hands_course_state", "classroom_hands", ["course_id", "state"])
    op.create_table(
        "classroom_audit",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("course_id", sa.String(64), nullable=False),
        sa.Column("hand_id", sa.Integer, nullable=True),
        sa.Column("learner", sa.String(255), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_classroom_audit_course", "classroom_audit", ["course_id", "learner"])
    op.create_table(
        "classroom_announcements",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("course_id", sa.String(64), nullable=False),
        sa.Column("session", sa.Integer, nullable=True),
        sa.Column("author", sa.String(255), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("posted_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_classroom_announcements_course", "classroom_announcements", ["course_id"])


def downgrade():
    op.drop_index("ix_classroom_announcements_course", "classroom_announcements")
    op.drop_table("classroom_announcements")
    op.drop_index("ix_classroom_audit_course", "classroom_audit")
    op.drop_table("classroom_audit")
    op.drop_index("ix_classroom_hands_course_state", "classroom_hands")
    op.drop_table("classroom_hands")
