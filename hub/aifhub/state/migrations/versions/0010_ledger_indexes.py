"""Indexes for the ledger at workshop scale: balances read from sessions, the batched metering tick.

Revision ID: 0010
Revises: 0006
Create Date: 2026-12-02
"""

from alembic import op

revision = "0010"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    # learners' window usage is read from sessions now: the events' own index is one more write per charge
    op.drop_index("ix_events_user_course_end", "usage_events")
    # a learner's usage in a course's quota window; a course's totals
    op.create_index("ix_sessions_course_user", "sandbox_sessions", ["course_id", "user", "started_at"])
    # an allocation's totals
    op.create_index("ix_sessions_allocation", "sandbox_sessions", ["allocation_id", "state"])


def downgrade():
    op.drop_index("ix_sessions_allocation", "sandbox_sessions")
    op.drop_index("ix_sessions_course_user", "sandbox_sessions")
    op.create_index("ix_events_user_course_end", "usage_events", ["user", "course_id", "end_at"])
