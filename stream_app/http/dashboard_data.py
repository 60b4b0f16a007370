"""The dashboard's figures (GET /dashboard/data): connections by platform and status, tokens
expiring in the next hour, the last 24 hours of refresh outcomes (from the rollup table, never
from events), failures by class, connections needing re-auth (hashed ids), circuits and dead
letters. Nothing here holds a token or a raw user id."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import case, func, select

from stream_app.bulk.selector import SELECTABLE_STATUSES
from stream_app.catalog import REFRESHABLE_PLATFORMS
from stream_app.clock import to_aware_utc, utc_now
from stream_app.db import ConnectionStatus, Database
from stream_app.db.models import REFRESHABLE_STATUSES, ConnectionRow, RefreshRollupRow
from stream_app.db.rollup import ROLLED_UP_OUTCOMES, hour_of
from stream_app.http.operational import OperationalFigures
from stream_app.http.probe import WorkerProbe
from stream_app.providers.wording import error_class_of

EXPIRY_BUCKET_MINUTES = 5
EXPIRY_WINDOW_MINUTES = 60
ACTIVITY_HOURS = 24
NEEDS_REAUTH_SHOWN = 20
DLQ_COMMAND = "token-refresh dlq show <topic>"


class ConnectionCount(BaseModel):
    platform: str
    status: str
    count: int


class Expiring(BaseModel):
    bucket_minutes: int = EXPIRY_BUCKET_MINUTES
    counts: list[int] = Field(description="Refreshable tokens expiring in each bucket of the next hour, soonest first")
    already_expired: int = Field(description="Refreshable (connected, token_expired) tokens already past their expiry")


class Activity(BaseModel):
    hours: list[datetime] = Field(description="The start of each of the last 24 hours, oldest first")
    counts: dict[str, list[int]] = Field(description="Outcome -> count in each hour (refreshed, failed, ...)")


class FailureClass(BaseModel):
    outcome: str
    error_class: str
    count: int


class ReauthConnection(BaseModel):
    user: str = Field(description="The user id hashed, as in the logs")
    platform: str
    since: datetime | None
    error_class: str | None


class NeedsReauth(BaseModel):
    total: int
    connections: list[ReauthConnection] = Field(description=f"The {NEEDS_REAUTH_SHOWN} most recent")


class DeadLetters(BaseModel):
    topics: dict[str, int | None] = Field(description="Records per dead-letter topic; null: the topic does not exist")
    command: str = DLQ_COMMAND


class DashboardData(BaseModel):
    generated_at: datetime
    platforms: list[str] = Field(description="The refreshable platforms (the bulk refresh form's choices)")
    selectable_statuses: list[str]
    connections: list[ConnectionCount]
    expiring: Expiring
    activity: Activity
    failures_by_class: list[FailureClass] = Field(description="Failed and needs_reauth outcomes of the last 24 h")
    needs_reauth: NeedsReauth
    circuits: dict[str, str] | None = Field(description="Platform -> circuit state; null: no worker in this process")
    dead_letters: DeadLetters


async def gather(
    database: Database,
    hasher: Any,
    operational: OperationalFigures,
    probe: WorkerProbe | None,
) -> DashboardData:
    now = utc_now()
    first_hour = hour_of(now) - timedelta(hours=ACTIVITY_HOURS - 1)
    async with database.sessions() as session:
        connections = [
            ConnectionCount(platform=platform, status=status or ConnectionStatus.CONNECTED, count=count)
            for platform, status, count in await session.execute(
                select(ConnectionRow.platform, ConnectionRow.status, func.count())
                .group_by(ConnectionRow.platform, ConnectionRow.status)
                .order_by(ConnectionRow.platform, ConnectionRow.status)
            )
        ]
        expiring = await _expiring(session, now)
        rollup = (
            await session.execute(
                select(
                    RefreshRollupRow.hour,
                    RefreshRollupRow.outcome,
                    RefreshRollupRow.error_class,
                    RefreshRollupRow.count,
                ).where(RefreshRollupRow.hour >= first_hour)
            )
        ).all()
        reauth_total, reauth_rows = await _needs_reauth(session)
    stored = await operational.stored()
    return DashboardData(
        generated_at=to_aware_utc(now),
        platforms=list(REFRESHABLE_PLATFORMS),
        selectable_statuses=list(SELECTABLE_STATUSES),
        connections=connections,
        expiring=expiring,
        activity=_activity(rollup, first_hour),
        failures_by_class=_failures(rollup),
        needs_reauth=NeedsReauth(
            total=reauth_total,
            connections=[
                ReauthConnection(
                    user=hasher(row.user_id),
                    platform=row.platform,
                    since=to_aware_utc(row.updated_at) if row.updated_at else None,
                    error_class=error_class_of(row.last_sync_error),
                )
                for row in reauth_rows
            ],
        ),
        circuits=dict(sorted(probe.circuit_states().items())) if probe is not None else None,
        dead_letters=DeadLetters(
            topics={topic: stored.dead_letters.get(topic) for topic in operational.dead_letter_topics()}
        ),
    )


async def _expiring(session: Any, now: datetime) -> Expiring:
    buckets = EXPIRY_WINDOW_MINUTES // EXPIRY_BUCKET_MINUTES
    expires = ConnectionRow.token_expires_at
    bucket = case(
        (expires < now, -1),
        *[(expires < now + timedelta(minutes=EXPIRY_BUCKET_MINUTES * (i + 1)), i) for i in range(buckets)],
        else_=buckets,
    )
    rows = await session.execute(
        select(bucket, func.count())
        .where(
            ConnectionRow.status.in_([str(status) for status in REFRESHABLE_STATUSES]),
            expires < now + timedelta(minutes=EXPIRY_WINDOW_MINUTES),
        )
        .group_by(bucket)
    )
    counts = [0] * buckets
    expired = 0
    for index, count in rows:
        if index < 0:
            expired = count
        elif index < buckets:
            counts[index] = count
    return Expiring(counts=counts, already_expired=expired)


def _activity(rollup: Any, first_hour: datetime) -> Activity:
    hours = [first_hour + timedelta(hours=i) for i in range(ACTIVITY_HOURS)]
    counts = {outcome: [0] * ACTIVITY_HOURS for outcome in ROLLED_UP_OUTCOMES}
    for hour, outcome, _class, count in rollup:
        index = int((hour - first_hour).total_seconds() // 3600)
        if 0 <= index < ACTIVITY_HOURS and outcome in counts:
            counts[outcome][index] += count
    return Activity(hours=[to_aware_utc(hour) for hour in hours], counts=counts)


def _failures(rollup: Any) -> list[FailureClass]:
    totals: dict[tuple[str, str], int] = {}
    for _hour, outcome, error_class, count in rollup:
        if outcome in ("failed", "needs_reauth"):
            totals[(outcome, error_class)] = totals.get((outcome, error_class), 0) + count
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    return [FailureClass(outcome=outcome, error_class=cls, count=count) for (outcome, cls), count in ranked]


async def _needs_reauth(session: Any) -> tuple[int, list[Any]]:
    """How many connections need re-auth, and the most recent (no token column is read)."""
    row = ConnectionRow
    needs = row.status == ConnectionStatus.NEEDS_REAUTH
    total = await session.scalar(select(func.count()).where(needs))
    recent = await session.execute(
        select(row.user_id, row.platform, row.updated_at, row.last_sync_error)
        .where(needs)
        .order_by(row.updated_at.desc().nulls_last(), row.id)
        .limit(NEEDS_REAUTH_SHOWN)
    )
    return int(total or 0), list(recent)
