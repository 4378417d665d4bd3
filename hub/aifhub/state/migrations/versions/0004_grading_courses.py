"""Grading courses: each course's grading group id and where its gradebook lives.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "grading_courses",
        sa.Column("course_id", sa.String(64), primary_key=True),
        sa.Column("gid", sa.Integer, nullable=False, unique=True),
        sa.Column("gradebook_url", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )


def downgrade():
    op.drop_table("grading_courses")
