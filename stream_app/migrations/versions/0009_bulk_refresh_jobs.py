"""bulk_refresh_jobs: bulk refresh jobs (``POST /refresh/bulk``, ``token-refresh bulk-refresh``),
their progress and resume cursor, so a job survives a worker restart.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_ACTIVE = "status IN ('pending', 'running')"


def upgrade() -> None:
    op.create_table(
        "bulk_refresh_jobs",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("selector", sa.JSON(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("rate_per_platform", sa.Float(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.Text()),
        sa.Column("total", sa.Integer()),
        sa.Column("matched", sa.JSON()),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("resume_cursor", sa.JSON(), nullable=False),
        sa.Column("resume_pages", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime()),
        sa.Column("finished_at", sa.DateTime()),
        sa.Column("updated_at", sa.DateTime()),
        sa.Column("lease_owner", sa.Text()),
        sa.Column("lease_expires_at", sa.DateTime()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')",
            name="bulk_refresh_jobs_status_check",
        ),
    )
    op.create_index(
        "idx_bulk_refresh_jobs_active",
        "bulk_refresh_jobs",
        ["created_at"],
        postgresql_where=sa.text(_ACTIVE),
        sqlite_where=sa.text(_ACTIVE),
    )


def downgrade() -> None:
    op.drop_index("idx_bulk_refresh_jobs_active", table_name="bulk_refresh_jobs")
    op.drop_table("bulk_refresh_jobs")
