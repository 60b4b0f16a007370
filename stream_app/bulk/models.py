"""The table of bulk refresh jobs (migration 0009). A job never holds a token."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, DateTime, Float, Index, Integer, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from stream_app.db.models import Base


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_STATUSES = (JobStatus.PENDING, JobStatus.RUNNING)
_STATUS_LIST = ", ".join(f"'{status}'" for status in JobStatus)
_ACTIVE_LIST = ", ".join(f"'{status}'" for status in ACTIVE_STATUSES)


class BulkJobRow(Base):
    __tablename__ = "bulk_refresh_jobs"
    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUS_LIST})", name="bulk_refresh_jobs_status_check"),
        Index(
            "idx_bulk_refresh_jobs_active",
            "created_at",
            postgresql_where=text(f"status IN ({_ACTIVE_LIST})"),
            sqlite_where=text(f"status IN ({_ACTIVE_LIST})"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    selector: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    dry_run: Mapped[bool] = mapped_column(Boolean, nullable=False)
    rate_per_platform: Mapped[float] = mapped_column(Float, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # Who asked (e.g. "cli:<login>@<host>", "api:<admin token's name>"): never a credential.
    created_by: Mapped[str | None] = mapped_column(Text)
    # Matched when the job started (NULL before), and by platform and status.
    total: Mapped[int | None] = mapped_column(Integer)
    matched: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    done: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    # Per platform: the connection id up to which every selected row is handled and counted, and
    # the ids of the page being handled, written once before any of them is refreshed (a column
    # of its own: the frequent saves of progress do not rewrite it). A resumed run goes through
    # that page again whatever the selector says of its rows now.
    resume_cursor: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    resume_pages: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The runner holding the job, until when; how many runs it took; why the last one failed
    # (an exception type, never its text).
    lease_owner: Mapped[str | None] = mapped_column(Text)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
