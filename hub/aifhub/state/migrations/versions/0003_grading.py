"""Grading: submissions received through the exchange, and the autograding queue.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "grading_submissions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("course_id", sa.String(64), nullable=False),
        sa.Column("assignment_id", sa.String(128), nullable=False),
        sa.Column("student", sa.String(255), nullable=False),
        sa.Column("timestamp", sa.String(64), nullable=False),
        sa.Column("folder", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False, server_default="0"),
        sa.Column("received_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_grading_submissions_lookup", "grading_submissions", ["course_id", "assignment_id", "student"])
    op.create_table(
        "grading_jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("course_id", sa.String(64), nullable=False),
        sa.Column("assignment_id", sa.String(128), nullable=False),
        sa.Column("student", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=True),
        sa.Column("finished_at", sa.DateTime, nullable=True),
        sa.Column("requested_by", sa.String(255), nullable=False, server_default=""),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("max_score", sa.Float, nullable=True),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
    )
    op.create_index("ix_grading_jobs_state", "grading_jobs", ["state", "id"])
    op.create_index("ix_grading_jobs_course", "grading_jobs", ["course_id", "assignment_id"])


def downgrade():
    op.drop_index("ix_grading_jobs_course", "grading_jobs")
    op.drop_index("ix_grading_jobs_state", "grading_jobs")
    op.drop_table("grading_jobs")
    op.drop_index("ix_grading_submissions_lookup", "grading_submissions")
    op.drop_table("grading_submissions")
