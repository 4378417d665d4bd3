"""Completion credentials (Open Badges), instructors' sign-offs, and learners' declarations for training reports.

Revision ID: 0011cred
Revises: 0008
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0011cred"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "credentials",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("course_id", sa.String(64), nullable=False),
        sa.Column("status_index", sa.Integer, nullable=False, unique=True),
        sa.Column("status_list", sa.String(64), nullable=False),
        sa.Column("issued_at", sa.DateTime, nullable=False),
        sa.Column("revoked_at", sa.DateTime, nullable=True),
        sa.Column("revoked_by", sa.String(255), nullable=True),
        sa.Column("revoke_reason", sa.Text, nullable=True),
        sa.Column("document", sa.Text, nullable=False),
    )
    op.create_index("ix_credentials_user_course", "credentials", ["user", "course_id"])
    op.create_table(
        "completion_signoffs",
        sa.Column("course_id", sa.String(64), primary_key=True),
        sa.Column("user", sa.String(255), primary_key=True),
        sa.Column("signed_by", sa.String(255), nullable=False),
        sa.Column("signed_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "trainee_profiles",
        sa.Column("user", sa.String(255), primary_key=True),
        sa.Column("country", sa.String(2), nullable=True),
        sa.Column("sector", sa.String(32), nullable=True),
        sa.Column("gender", sa.String(32), nullable=True),
        sa.Column("declared_at", sa.DateTime, nullable=False),
    )


def downgrade():
    op.drop_table("trainee_profiles")
    op.drop_table("completion_signoffs")
    op.drop_index("ix_credentials_user_course", "credentials")
    op.drop_table("credentials")
