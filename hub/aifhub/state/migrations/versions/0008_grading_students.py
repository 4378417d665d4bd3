"""Grading students: the nbgrader student id of each hub user (names such as alice@uni.edu get a plain one).

Revision ID: 0008
Revises: 0009
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "grading_students",
        sa.Column("user", sa.String(255), primary_key=True),
        sa.Column("student_id", sa.String(128), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )


def downgrade():
    op.drop_table("grading_students")
