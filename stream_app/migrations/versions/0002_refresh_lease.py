"""Refresh lease columns: one refresh of a connection in flight across all processes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("platform_connections") as table:
        table.add_column(sa.Column("refresh_lease_owner", sa.Text()))
        table.add_column(sa.Column("refresh_lease_expires_at", sa.DateTime()))


def downgrade() -> None:
    with op.batch_alter_table("platform_connections") as table:
        table.drop_column("refresh_lease_expires_at")
        table.drop_column("refresh_lease_owner")
