"""outbox_events: a partial index on published_at, so the retention finds old published rows
without scanning the table (stream_app/db/outbox_retention.py).

A B-tree, not BRIN: pruning frees the table's oldest pages and new rows refill them, and a BRIN
range widened by those rows is never narrowed again, so it would soon match every cutoff.

On PostgreSQL this holds off outbox inserts (hence outcome commits) while it builds. On a large,
never pruned table, build it beforehand without blocking writes; the migration then skips it:
    CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_outbox_events_published_at
        ON outbox_events (published_at) WHERE published_at IS NOT NULL;

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_PUBLISHED = "published_at IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        "idx_outbox_events_published_at",
        "outbox_events",
        ["published_at"],
        postgresql_where=sa.text(_PUBLISHED),
        sqlite_where=sa.text(_PUBLISHED),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("idx_outbox_events_published_at", table_name="outbox_events")
