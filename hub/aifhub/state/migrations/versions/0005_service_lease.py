"""The service's lease on the state database (the CLI's offline writes refuse while it is fresh).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "service_lease",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("renewed_at", sa.DateTime, nullable=False),
    )


def downgrade():
    op.drop_table("service_lease")
