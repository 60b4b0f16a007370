"""Scheduling by refresh time: refresh_due_at (indexed for the scan) and the token's lifetime.

Rows written before this migration get refresh_due_at = token_expires_at - 300 s (the
default buffer); the next refresh of each recomputes it from the running settings.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_SCANNED = "status IN ('connected', 'token_expired') AND refresh_due_at IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("platform_connections") as table:
        table.add_column(sa.Column("token_lifetime_seconds", sa.Integer()))
        table.add_column(sa.Column("refresh_due_at", sa.DateTime()))
    minus_buffer = (
        "token_expires_at - INTERVAL '300 seconds'"
        if op.get_bind().dialect.name == "postgresql"
        else "datetime(token_expires_at, '-300 seconds')"
    )
    op.execute(
        f"UPDATE platform_connections SET refresh_due_at = {minus_buffer} "  # noqa: S608 - constant SQL
        "WHERE token_expires_at IS NOT NULL AND platform <> 'github'"
    )
    op.create_index(
        "idx_platform_connections_refresh_due",
        "platform_connections",
        ["refresh_due_at", "id"],
        postgresql_where=sa.text(_SCANNED),
        sqlite_where=sa.text(_SCANNED),
    )


def downgrade() -> None:
    op.drop_index("idx_platform_connections_refresh_due", table_name="platform_connections")
    with op.batch_alter_table("platform_connections") as table:
        table.drop_column("refresh_due_at")
        table.drop_column("token_lifetime_seconds")
