"""platform_connections: fillfactor 85, so that the scan's mark is a HOT update.

The scan's mark (``refresh_requested_at``) and the lease (``refresh_lease_owner``,
``refresh_lease_expires_at``) change no indexed column, so PostgreSQL can write the new row
version into the same page without a new entry in any of the table's five indexes (a HOT
update) when that page has room. At the default fillfactor (100) a bulk-loaded or densely
inserted page has none: the first mark of each of its rows went to another page and into
every index. 15 % of each page is left free for that; measured at 1,000,000 connections:
docs/benchmarks.md (scan).

The setting applies to pages filled from now on. Existing pages keep their rows; they gain
room as vacuum reclaims the versions that updates leave behind, or at once if the table is
rewritten (``VACUUM FULL`` or pg_repack, outside this migration: it locks or copies the
table). Setting it takes a SHARE UPDATE EXCLUSIVE lock, which reads and writes do not wait
for. A no-op on SQLite (no such storage parameter; one writer at a time anyway).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE platform_connections SET (fillfactor = 85)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE platform_connections RESET (fillfactor)")
