"""GPU use per session: the time its GPU sat idle while charged, and the pod that runs it (Kubernetes), whose
DCGM readings are its own.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("sandbox_sessions") as t:
        t.add_column(sa.Column("gpu_idle_ms", sa.BigInteger, nullable=False, server_default="0"))
        t.add_column(sa.Column("pod", sa.String(320), nullable=True))


def downgrade():
    with op.batch_alter_table("sandbox_sessions") as t:
        t.drop_column("pod")
        t.drop_column("gpu_idle_ms")
