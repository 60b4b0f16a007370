"""Rows of the database. Tokens in these rows are always ciphertexts.

`platform_connections` keeps the seed's columns, types and indexes (so its monitoring
queries run unchanged) and adds what the engine needs: a version for fenced updates,
the time a refresh was last requested (so the scan does not re-emit in-flight work),
and a failure counter. Timestamps are UTC, stored without zone as in the seed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class ConnectionStatus(StrEnum):
    CONNECTED = "connected"
    TOKEN_EXPIRED = "token_expired"
    NEEDS_REAUTH = "needs_reauth"
    DISCONNECTED = "disconnected"
    ERROR = "error"


REFRESHABLE_STATUSES = (ConnectionStatus.CONNECTED, ConnectionStatus.TOKEN_EXPIRED)


def _sql_list(values: Iterable[str]) -> str:
    """``'a', 'b'``: the values of a CHECK or an index's WHERE ... IN (...)."""
    return ", ".join(f"'{value}'" for value in values)


_STATUS_LIST = _sql_list(ConnectionStatus)
_SCANNED_STATUS_LIST = _sql_list(REFRESHABLE_STATUSES)


class Base(DeclarativeBase):
    pass


class ConnectionRow(Base):
    __tablename__ = "platform_connections"
    __table_args__ = (
        UniqueConstraint("user_id", "platform"),
        CheckConstraint(f"status IN ({_STATUS_LIST})", name="platform_connections_status_check"),
        Index(
            "idx_platform_connections_status",
            "status",
            postgresql_where=text(f"status IN ({_SCANNED_STATUS_LIST})"),
            sqlite_where=text(f"status IN ({_SCANNED_STATUS_LIST})"),
        ),
        Index(
            "idx_platform_connections_refresh_due",
            "refresh_due_at",
            "id",
            postgresql_where=text(f"status IN ({_SCANNED_STATUS_LIST}) AND refresh_due_at IS NOT NULL"),
            sqlite_where=text(f"status IN ({_SCANNED_STATUS_LIST}) AND refresh_due_at IS NOT NULL"),
        ),
        Index(
            "idx_platform_connections_expiry",
            "token_expires_at",
            postgresql_where=text("token_expires_at IS NOT NULL"),
            sqlite_where=text("token_expires_at IS NOT NULL"),
        ),
        # Room on each page, so the scan's mark and the lease (no indexed column) are HOT
        # updates: migration 0007.
        {"postgresql_with": {"fillfactor": 85}},
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    platform: Mapped[str] = mapped_column(Text, nullable=False)
    access_token: Mapped[str | None] = mapped_column(Text)
    refresh_token: Mapped[str | None] = mapped_column(Text)
    token_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Nullable, as in the seed's schema (migration 0001); the service always writes one.
    status: Mapped[str] = mapped_column(Text, nullable=True, default=ConnectionStatus.CONNECTED)
    last_sync_status: Mapped[str | None] = mapped_column(Text, default="pending")
    last_sync_error: Mapped[str | None] = mapped_column(Text)
    connected_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Added by this service.
    scopes: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    refresh_requested_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_refreshed_at: Mapped[datetime | None] = mapped_column(DateTime)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    token_lifetime_seconds: Mapped[int | None] = mapped_column(Integer)
    refresh_due_at: Mapped[datetime | None] = mapped_column(DateTime)
    # No scheduled refresh before this (failure backoff, rate limit, open circuit); NULL: no hold.
    refresh_not_before: Mapped[datetime | None] = mapped_column(DateTime)
    refresh_lease_owner: Mapped[str | None] = mapped_column(Text)
    refresh_lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime)


class OutboxRow(Base):
    """An outcome event committed with the state change it reports, awaiting publication."""

    __tablename__ = "outbox_events"
    __table_args__ = (
        Index(
            "idx_outbox_events_unpublished",
            "id",
            postgresql_where=text("published_at IS NULL"),
            sqlite_where=text("published_at IS NULL"),
        ),
        # The retention's chunks: migration 0006.
        Index(
            "idx_outbox_events_published_at",
            "published_at",
            postgresql_where=text("published_at IS NOT NULL"),
            sqlite_where=text("published_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, unique=True)
    topic: Mapped[str] = mapped_column(String(255), nullable=False)
    key: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    payload: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    published_at: Mapped[datetime | None] = mapped_column(DateTime)


class ProcessedEventRow(Base):
    """An input event already applied: a duplicate (producer retry, replay) is recognised."""

    __tablename__ = "processed_events"
    __table_args__ = (Index("idx_processed_events_processed_at", "processed_at"),)

    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    topic: Mapped[str] = mapped_column(String(255), nullable=False)
    processed_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class RefreshRollupRow(Base):
    """Refresh outcomes counted per hour, platform, outcome and error class (the dashboard's
    24-hour charts): one upsert per committed batch of outcomes (stream_app/db/rollup.py),
    pruned after ROLLUP_RETENTION_DAYS by the leader's housekeeping. Migration 0010."""

    __tablename__ = "refresh_outcomes_hourly"
    __table_args__ = (
        CheckConstraint(
            "outcome IN ('refreshed', 'failed', 'needs_reauth', 'deferred')",
            name="refresh_outcomes_hourly_outcome_check",
        ),
    )

    # The hour's start, naive UTC.
    hour: Mapped[datetime] = mapped_column(DateTime, primary_key=True)
    platform: Mapped[str] = mapped_column(Text, primary_key=True)
    outcome: Mapped[str] = mapped_column(Text, primary_key=True)
    # The failure's class (failed), the reason (needs_reauth, deferred); '' for refreshed.
    error_class: Mapped[str] = mapped_column(Text, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), nullable=False)


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_STATUSES = (JobStatus.PENDING, JobStatus.RUNNING)
_JOB_STATUS_LIST = _sql_list(JobStatus)
_ACTIVE_JOB_LIST = _sql_list(ACTIVE_STATUSES)


class BulkJobRow(Base):
    """A bulk refresh job (stream_app.bulk; migration 0009). A job never holds a token."""

    __tablename__ = "bulk_refresh_jobs"
    __table_args__ = (
        CheckConstraint(f"status IN ({_JOB_STATUS_LIST})", name="bulk_refresh_jobs_status_check"),
        Index(
            "idx_bulk_refresh_jobs_active",
            "created_at",
            postgresql_where=text(f"status IN ({_ACTIVE_JOB_LIST})"),
            sqlite_where=text(f"status IN ({_ACTIVE_JOB_LIST})"),
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
