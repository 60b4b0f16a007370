"""refresh_outcomes_hourly: refresh outcomes counted per hour, platform, outcome and error
class, written with each committed batch of outcomes; the dashboard's 24-hour charts read it
instead of scanning events. Small: one row per (hour, platform, outcome, class) seen, pruned
after 30 days by the leader's hourly housekeeping.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "refresh_outcomes_hourly",
        sa.Column("hour", sa.DateTime(), primary_key=True),
        sa.Column("platform", sa.Text(), primary_key=True),
        sa.Column("outcome", sa.Text(), primary_key=True),
        sa.Column("error_class", sa.Text(), primary_key=True),
        sa.Column("count", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('refreshed', 'failed', 'needs_reauth', 'deferred')",
            name="refresh_outcomes_hourly_outcome_check",
        ),
    )


def downgrade() -> None:
    op.drop_table("refresh_outcomes_hourly")
