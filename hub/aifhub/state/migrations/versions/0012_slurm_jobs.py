"""Slurm jobs' usage from sacct, once per job id (docs/slurm.md).

Revision ID: 0012
Revises: 0011cred
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011cred"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "slurm_jobs",
        sa.Column("cluster", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.BigInteger, primary_key=True),
        sa.Column("site_user", sa.String(255), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("course_id", sa.String(64), nullable=True),
        sa.Column("allocation_id", sa.String(64), nullable=True),
        sa.Column("session_id", sa.Integer, nullable=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("elapsed_s", sa.BigInteger, nullable=False),
        sa.Column("gpu_count", sa.Integer, nullable=False),
        sa.Column("gpu_ms", sa.BigInteger, nullable=False),
        sa.Column("cpu_ms", sa.BigInteger, nullable=False),
        sa.Column("recorded_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_slurm_jobs_course", "slurm_jobs", ["course_id"])


def downgrade():
    op.drop_index("ix_slurm_jobs_course", "slurm_jobs")
    op.drop_table("slurm_jobs")
