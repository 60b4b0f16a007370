"""Bulk refresh jobs in the database: what the HTTP API and the CLI create, read and cancel,
and what a runner claims, saves progress on and finishes (fenced on its lease)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import and_, func, or_, select, update

from stream_app.bulk.models import ACTIVE_STATUSES, BulkJobRow, JobStatus
from stream_app.bulk.selector import BulkSelector
from stream_app.bulk.settings import BulkSettings
from stream_app.clock import to_aware_utc, utc_now
from stream_app.db import Database
from stream_app.db.clock import db_now
from stream_app.db.models import ConnectionRow

# Refreshes per second and platform a job may ask for: slower than 36 an hour is a mistake, and a
# pause between two refreshes longer than a few minutes only holds the runner.
MIN_RATE, MAX_RATE = 0.01, 1000.0


class BulkJobRequest(BaseModel):
    """What ``POST /refresh/bulk`` takes: ``BulkJobs.create(request.selector, request.dry_run,
    request.rate_per_platform)``."""

    model_config = ConfigDict(extra="forbid")

    selector: BulkSelector = Field(default_factory=BulkSelector)
    dry_run: bool = Field(default=False, description="Count what would be refreshed; refresh nothing.")
    rate_per_platform: float | None = Field(
        default=None,
        ge=MIN_RATE,
        le=MAX_RATE,
        description="Refreshes per second, per platform (default: a setting).",
    )


class BulkJobView(BaseModel):
    """A bulk refresh job as the API and the CLI show it (no token, no connection id)."""

    id: uuid.UUID
    status: JobStatus
    selector: BulkSelector | None = Field(description="Null when this version cannot read the job's selector")
    dry_run: bool
    rate_per_platform: float = Field(description="Refreshes per second, per platform.")
    total: int | None = Field(description="Connections matched when the job started (null until then).")
    matched: dict[str, dict[str, int]] | None = Field(
        description="Connections matched when the job started, by platform and status (a dry run's answer)."
    )
    done: int = Field(description="Connections handled so far (any outcome).")
    percent: float
    counts: dict[str, int] = Field(
        description="Handled connections by outcome: refreshed, needs_reauth, failed, deferred, skipped, "
        "already_refreshed (refreshed since the job was created), no_longer_selected (changed since it started), "
        "error (the refresh raised); a dry run counts would_refresh."
    )
    cancel_requested: bool
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int = Field(description="Runs the job took (more than one: resumed after a worker stopped).")
    last_error: str | None = Field(description="Why the runner's last run failed (an exception type).")

    @property
    def finished(self) -> bool:
        return self.status not in ACTIVE_STATUSES


def readable_selector(stored: Any) -> BulkSelector | None:
    """The job's selector, or None when this version cannot read it (a job created by a newer
    version during a rolling deploy, or naming a platform since removed)."""
    try:
        return BulkSelector.model_validate(stored)
    except ValidationError:
        return None


def view_of(row: BulkJobRow) -> BulkJobView:
    total = row.total
    if row.status == JobStatus.SUCCEEDED:
        percent = 100.0
    elif total:
        percent = round(min(100.0, 100.0 * row.done / total), 1)
    else:
        percent = 0.0
    return BulkJobView(
        id=row.id,
        status=JobStatus(row.status),
        selector=readable_selector(row.selector),
        dry_run=row.dry_run,
        rate_per_platform=row.rate_per_platform,
        total=total,
        matched=row.matched,
        done=row.done,
        percent=percent,
        counts=dict(row.counts),
        cancel_requested=row.cancel_requested,
        created_by=row.created_by,
        created_at=to_aware_utc(row.created_at),
        started_at=to_aware_utc(row.started_at) if row.started_at else None,
        finished_at=to_aware_utc(row.finished_at) if row.finished_at else None,
        attempts=row.attempts,
        last_error=row.last_error,
    )


class BulkJobs:
    """The jobs' API for the HTTP routes and the CLI."""

    def __init__(self, database: Database, settings: BulkSettings | None = None) -> None:
        self._db = database
        self._settings = settings or BulkSettings.defaults()

    async def create(
        self,
        selector: BulkSelector,
        dry_run: bool = False,
        rate_per_platform: float | None = None,
        *,
        created_by: str | None = None,
    ) -> uuid.UUID:
        """A pending job (a worker picks it up); its id."""
        rate = self._settings.rate_per_platform if rate_per_platform is None else rate_per_platform
        if not MIN_RATE <= rate <= MAX_RATE:
            raise ValueError(f"rate_per_platform must be {MIN_RATE:g} to {MAX_RATE:g} refreshes per second")
        row = BulkJobRow(
            id=uuid.uuid4(),
            selector=selector.model_dump(mode="json"),
            dry_run=dry_run,
            rate_per_platform=rate,
            status=JobStatus.PENDING,
            cancel_requested=False,
            created_by=created_by,
            done=0,
            counts={},
            resume_cursor={},
            resume_pages={},
            created_at=utc_now(),
            attempts=0,
        )
        async with self._db.transaction() as session:
            session.add(row)
        return row.id

    async def get(self, job_id: uuid.UUID) -> BulkJobView | None:
        async with self._db.sessions() as session:
            row = await session.get(BulkJobRow, job_id)
            return view_of(row) if row is not None else None

    async def list(self, limit: int = 50) -> list[BulkJobView]:
        """The newest jobs first."""
        async with self._db.sessions() as session:
            rows = await session.scalars(
                select(BulkJobRow).order_by(BulkJobRow.created_at.desc(), BulkJobRow.id).limit(limit)
            )
            return [view_of(row) for row in rows]

    async def cancel(self, job_id: uuid.UUID) -> BulkJobView | None:
        """Ask the job to stop: a pending one is cancelled at once, a running one by its runner
        between two connections. A finished job is left as it is. None: no such job."""
        now = utc_now()
        async with self._db.transaction() as session:
            await session.execute(
                update(BulkJobRow)
                .where(BulkJobRow.id == job_id, BulkJobRow.status == JobStatus.PENDING)
                .values(status=JobStatus.CANCELLED, cancel_requested=True, finished_at=now, updated_at=now)
            )
            await session.execute(
                update(BulkJobRow)
                .where(BulkJobRow.id == job_id, BulkJobRow.status == JobStatus.RUNNING)
                .values(cancel_requested=True, updated_at=now)
            )
        return await self.get(job_id)


# -- the runner's side ----------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedJob:
    id: uuid.UUID
    selector: BulkSelector
    dry_run: bool
    rate_per_platform: float
    created_at: datetime
    total: int | None
    done: int
    counts: dict[str, int]
    cursor: dict[str, str]
    pages: dict[str, list[str]]
    cancel_requested: bool
    attempts: int


async def claim_job(database: Database, owner: str, lease_seconds: float) -> ClaimedJob | None:
    """Take the oldest pending job, or a running one whose runner stopped renewing its lease;
    two runners never hold one job (the row is locked, SKIP LOCKED, and the lease re-checked)."""
    lease_free = or_(BulkJobRow.lease_expires_at.is_(None), BulkJobRow.lease_expires_at < db_now())
    active = BulkJobRow.status.in_(ACTIVE_STATUSES)
    async with database.transaction() as session:
        job_id = await session.scalar(
            select(BulkJobRow.id)
            .where(active, lease_free)
            .order_by(BulkJobRow.created_at, BulkJobRow.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        if job_id is None:
            return None
        stored = await session.scalar(select(BulkJobRow.selector).where(BulkJobRow.id == job_id))
        if readable_selector(stored) is None:  # it would be taken, fail to run and be taken again, for ever
            await session.execute(
                update(BulkJobRow)
                .where(BulkJobRow.id == job_id)
                .values(
                    status=JobStatus.FAILED,
                    last_error="unreadable selector (created by another version?)",
                    finished_at=db_now(),
                    updated_at=db_now(),
                )
            )
            return None
        row = (
            await session.execute(
                update(BulkJobRow)
                .where(BulkJobRow.id == job_id, active, lease_free)
                .values(
                    status=JobStatus.RUNNING,
                    lease_owner=owner,
                    lease_expires_at=db_now(lease_seconds),
                    started_at=func.coalesce(BulkJobRow.started_at, db_now()),
                    attempts=BulkJobRow.attempts + 1,
                )
                .returning(BulkJobRow)
                .execution_options(synchronize_session=False)
            )
        ).scalar_one_or_none()
    if row is None:
        return None
    return ClaimedJob(
        id=row.id,
        selector=BulkSelector.model_validate(row.selector),
        dry_run=row.dry_run,
        rate_per_platform=row.rate_per_platform,
        created_at=row.created_at,
        total=row.total,
        done=row.done,
        counts=dict(row.counts),
        cursor=dict(row.resume_cursor),
        pages=dict(row.resume_pages),
        cancel_requested=row.cancel_requested,
        attempts=row.attempts,
    )


class LeaseLostError(RuntimeError):
    """Another runner holds the job now (this one stalled past its lease)."""


def _held(job_id: uuid.UUID, owner: str) -> Any:
    return and_(BulkJobRow.id == job_id, BulkJobRow.lease_owner == owner)


async def count_matches(database: Database, job: ClaimedJob) -> dict[str, dict[str, int]]:
    """The job's matching connections by platform and status."""
    async with database.sessions() as session:
        rows = await session.execute(
            select(ConnectionRow.platform, ConnectionRow.status, func.count())
            .where(job.selector.matches(job.created_at))
            .group_by(ConnectionRow.platform, ConnectionRow.status)
        )
        matched: dict[str, dict[str, int]] = {}
        for platform, status, count in rows:
            matched.setdefault(platform, {})[status] = count
        return matched


async def record_start(
    database: Database, job_id: uuid.UUID, owner: str, lease_seconds: float, matched: dict[str, dict[str, int]]
) -> None:
    total = sum(sum(by_status.values()) for by_status in matched.values())
    await _fenced(database, job_id, owner, total=total, matched=matched, lease_expires_at=db_now(lease_seconds))


async def save_progress(
    database: Database,
    job_id: uuid.UUID,
    owner: str,
    lease_seconds: float,
    *,
    done: int,
    counts: dict[str, int],
    cursor: dict[str, str],
    pages: dict[str, list[str]] | None = None,
) -> bool:
    """Save progress (and ``pages`` when given) and renew the lease; whether a cancel was asked.
    LeaseLostError when another runner holds the job."""
    values: dict[str, Any] = {
        "done": done,
        "counts": counts,
        "resume_cursor": cursor,
        "updated_at": utc_now(),
        "lease_expires_at": db_now(lease_seconds),
    }
    if pages is not None:
        values["resume_pages"] = pages
    async with database.transaction() as session:
        requested = await session.scalar(
            update(BulkJobRow).where(_held(job_id, owner)).values(**values).returning(BulkJobRow.cancel_requested)
        )
    if requested is None:
        raise LeaseLostError(f"bulk refresh job {job_id} is held by another runner now")
    return bool(requested)


async def finish(
    database: Database,
    job_id: uuid.UUID,
    owner: str,
    status: JobStatus,
    *,
    last_error: str | None = None,
    **values: Any,
) -> None:
    now = utc_now()
    await _fenced(
        database,
        job_id,
        owner,
        status=status,
        finished_at=now,
        updated_at=now,
        lease_owner=None,
        lease_expires_at=None,
        last_error=last_error,
        **values,
    )


async def release(
    database: Database, job_id: uuid.UUID, owner: str, *, last_error: str | None = None, retry_in: float = 0.0
) -> None:
    """Give the job back (still running) for any runner to resume, after ``retry_in`` seconds."""
    lease = db_now(retry_in) if retry_in > 0 else None
    await _fenced(database, job_id, owner, lease_owner=None, lease_expires_at=lease, last_error=last_error)


async def _fenced(database: Database, job_id: uuid.UUID, owner: str, **values: Any) -> None:
    async with database.transaction() as session:
        result = await session.execute(update(BulkJobRow).where(_held(job_id, owner)).values(**values))
    if not result.rowcount:  # type: ignore[attr-defined]
        raise LeaseLostError(f"bulk refresh job {job_id} is held by another runner now")
