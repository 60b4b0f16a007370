"""Bulk refresh jobs over HTTP (ADMIN_TOKENS): start one for a selector, follow its progress and
counts by outcome, cancel it, list the recent ones. The jobs live in the database
(stream_app.bulk); a worker runs them, so a job outlives the process that created it."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from stream_app.bulk import BulkJobs, BulkJobView, BulkSelector, BulkSettings
from stream_app.http.auth import require_admin

router = APIRouter(prefix="/refresh/bulk", dependencies=[Depends(require_admin)], tags=["bulk refresh"])

MAX_LISTED = 200
CREATED_BY = "api"


class BulkRefreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    selector: BulkSelector = Field(default_factory=BulkSelector)
    dry_run: bool = Field(
        default=False, description="Count what the selector matches, by platform and status; refresh nothing."
    )
    rate_per_platform: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        description="Refreshes per second, per platform (default BULK_REFRESH_RATE_PER_PLATFORM).",
    )


class BulkJobCreated(BaseModel):
    id: uuid.UUID
    status_url: str = Field(description="Where to follow the job")


def _jobs(request: Request) -> BulkJobs:
    service = request.app.state.service
    return BulkJobs(service.database, BulkSettings.from_settings(service.settings))


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BulkJobCreated,
    summary="Start a bulk refresh job for the connections a selector matches; a worker runs it",
)
async def start_bulk_refresh(request: Request, body: BulkRefreshRequest) -> BulkJobCreated:
    job_id = await _jobs(request).create(body.selector, body.dry_run, body.rate_per_platform, created_by=CREATED_BY)
    return BulkJobCreated(id=job_id, status_url=str(request.url_for("bulk_refresh_job", job_id=job_id).path))


@router.get("", response_model=list[BulkJobView], summary="The recent bulk refresh jobs, newest first")
async def bulk_refresh_jobs(
    request: Request, limit: Annotated[int, Query(ge=1, le=MAX_LISTED)] = 20
) -> list[BulkJobView]:
    return await _jobs(request).list(limit)


@router.get(
    "/{job_id}",
    name="bulk_refresh_job",
    response_model=BulkJobView,
    summary="A bulk refresh job: status, progress and counts by outcome",
)
async def bulk_refresh_job(request: Request, job_id: uuid.UUID) -> BulkJobView:
    return _found(await _jobs(request).get(job_id))


@router.post(
    "/{job_id}/cancel",
    response_model=BulkJobView,
    summary="Cancel a bulk refresh job: a pending one at once, a running one between two connections",
)
async def cancel_bulk_refresh(request: Request, job_id: uuid.UUID) -> BulkJobView:
    return _found(await _jobs(request).cancel(job_id))


def _found(view: BulkJobView | None) -> BulkJobView:
    if view is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such bulk refresh job")
    return view
