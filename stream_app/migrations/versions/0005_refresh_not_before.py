"""refresh_not_before: a hold on scheduled refreshes (failure backoff, a provider's rate limit,
an open circuit), kept durably instead of slept in memory.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("platform_connections") as table:
        table.add_column(sa.Column("refresh_not_before", sa.DateTime()))


def downgrade() -> None:
    with op.batch_alter_table("platform_connections") as table:
        table.drop_column("refresh_not_before")
