"""The seed's platform_connections table, plus version/scheduling columns and the outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_STATUSES = "'connected', 'token_expired', 'needs_reauth', 'disconnected', 'error'"


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "platform_connections",
        sa.Column(
            "id",
            sa.Uuid(),
            primary_key=True,
            server_default=sa.text("gen_random_uuid()") if postgres else None,
        ),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("platform", sa.Text(), nullable=False),
        sa.Column("access_token", sa.Text()),
        sa.Column("refresh_token", sa.Text()),
        sa.Column("token_expires_at", sa.DateTime()),
        sa.Column("status", sa.Text(), server_default="connected"),
        sa.Column("last_sync_status", sa.Text(), server_default="pending"),
        sa.Column("last_sync_error", sa.Text()),
        sa.Column("connected_at", sa.DateTime(), server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.func.now()),
        *service_columns(),
        sa.UniqueConstraint("user_id", "platform"),
        sa.CheckConstraint(f"status IN ({_STATUSES})", name="platform_connections_status_check"),
    )
    op.create_index(
        "idx_platform_connections_status",
        "platform_connections",
        ["status"],
        postgresql_where=sa.text("status IN ('connected', 'token_expired')"),
        sqlite_where=sa.text("status IN ('connected', 'token_expired')"),
    )
    op.create_index(
        "idx_platform_connections_expiry",
        "platform_connections",
        ["token_expires_at"],
        postgresql_where=sa.text("token_expires_at IS NOT NULL"),
        sqlite_where=sa.text("token_expires_at IS NOT NULL"),
    )
    create_outbox(op)


def service_columns() -> list[sa.Column[Any]]:
    """This service's columns beside the seed's (`migrate --adopt` adds them to the seed's table).
    The NOT NULL ones have a constant default: on PostgreSQL 11 and later, adding them rewrites no row."""
    return [
        sa.Column("scopes", sa.Text()),
        sa.Column("version", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("refresh_requested_at", sa.DateTime()),
        sa.Column("last_refreshed_at", sa.DateTime()),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"),
    ]


def create_outbox(operations: Any) -> None:
    """The outbox table (here, and by `migrate --adopt` on the seed's database)."""
    operations.create_table(
        "outbox_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("event_id", sa.Uuid(), nullable=False, unique=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("published_at", sa.DateTime()),
    )
    operations.create_index(
        "idx_outbox_events_unpublished",
        "outbox_events",
        ["id"],
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("outbox_events")
    op.drop_table("platform_connections")
