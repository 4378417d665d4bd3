"""Logins: instructors granted by claims or LMS roles; LTI 1.3 links, LMS identities, line items and
scores to pass back.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "course_staff",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("course_id", sa.String(64), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("user", "course_id", "source", name="uq_course_staff"),
    )
    op.create_table(
        "lti_links",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("issuer", sa.String(255), nullable=False),
        sa.Column("client_id", sa.String(255), nullable=False),
        sa.Column("deployment_id", sa.String(255), nullable=False),
        sa.Column("context_id", sa.String(255), nullable=False),
        sa.Column("context_title", sa.Text, nullable=False, server_default=""),
        sa.Column("course_id", sa.String(64), nullable=False),
        sa.Column("lineitems_url", sa.Text, nullable=True),
        sa.Column("memberships_url", sa.Text, nullable=True),
        sa.Column("roster_synced_at", sa.DateTime, nullable=True),
        sa.Column("roster_error", sa.Text, nullable=True),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("issuer", "deployment_id", "context_id", name="uq_lti_link"),
    )
    op.create_index("ix_lti_links_course", "lti_links", ["course_id"])
    op.create_table(
        "lti_users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("issuer", sa.String(255), nullable=False),
        sa.Column("lti_user_id", sa.String(255), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("issuer", "lti_user_id", name="uq_lti_user"),
    )
    op.create_index("ix_lti_users_user", "lti_users", ["user"])
    op.create_table(
        "lti_lineitems",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("link_id", sa.Integer, sa.ForeignKey("lti_links.id", ondelete="CASCADE"), nullable=False),
        sa.Column("assignment_id", sa.String(128), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("link_id", "assignment_id", name="uq_lti_lineitem"),
    )
    op.create_table(
        "lti_scores",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("link_id", sa.Integer, sa.ForeignKey("lti_links.id", ondelete="CASCADE"), nullable=False),
        sa.Column("assignment_id", sa.String(128), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("lti_user_id", sa.String(255), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("max_score", sa.Float, nullable=False),
        sa.Column("graded_at", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("sent_at", sa.DateTime, nullable=True),
        sa.UniqueConstraint("link_id", "assignment_id", "user", "fingerprint", name="uq_lti_score"),
    )
    op.create_index("ix_lti_scores_due", "lti_scores", ["state", "next_attempt_at"])


def downgrade():
    op.drop_table("lti_scores")
    op.drop_table("lti_lineitems")
    op.drop_table("lti_users")
    op.drop_table("lti_links")
    op.drop_table("course_staff")
