"""The refresh rollup (refresh_outcomes_hourly, migration 0010): committed refresh outcomes
counted per hour, platform, outcome and error class, for the dashboard's 24-hour charts.

Counted in the transaction that commits the outcomes (stream_app/engine/outcomes.py): a batch's
outcomes are aggregated and written with one upsert, so a count exists exactly when its outcome
was stored. An outcome stored again after a commit whose reply was lost (fresh tokens are
retried while the row holds the spent token) is not counted again: its event is already in the
outbox (``in_outbox``). Keys are upserted in sorted order: two batches committing at once lock
shared rollup rows in the same order, and never wait on each other in a cycle."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import NamedTuple, cast

from sqlalchemy import Table, delete, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from stream_app.db.arrays import insert_from_arrays
from stream_app.db.engine import Database
from stream_app.db.models import OutboxRow, RefreshRollupRow

ROLLED_UP_OUTCOMES = ("refreshed", "failed", "needs_reauth", "deferred")
ROLLUP_RETENTION_DAYS = 30
# A provider's error class is ours or a short code; anything longer is cut, so that no answer
# can grow the table's keys.
MAX_ERROR_CLASS = 64

_rollup = cast(Table, RefreshRollupRow.__table__)
_KEY = ("hour", "platform", "outcome", "error_class")
_ADD_COUNTS = (
    "ON CONFLICT (hour, platform, outcome, error_class) "
    "DO UPDATE SET count = refresh_outcomes_hourly.count + excluded.count"
)


class Tally(NamedTuple):
    """One stored outcome of one connection."""

    platform: str
    outcome: str  # one of ROLLED_UP_OUTCOMES
    error_class: str  # '' for refreshed


def tally_of(platform: str, outcome: str, reason: str) -> Tally | None:
    """The tally of an outcome (a RefreshResult's outcome and reason), None if not rolled up."""
    if outcome not in ROLLED_UP_OUTCOMES:
        return None
    return Tally(platform, outcome, "" if outcome == "refreshed" else reason[:MAX_ERROR_CLASS])


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


async def add_tallies(session: AsyncSession, tallies: Iterable[Tally], now: datetime) -> None:
    """Count ``tallies`` in ``now``'s hour: one statement, nothing when there are none."""
    counted = Counter(tallies)
    if not counted:
        return
    hour = hour_of(now)
    rows = [
        {"hour": hour, "platform": t.platform, "outcome": t.outcome, "error_class": t.error_class, "count": n}
        for t, n in sorted(counted.items())
    ]
    if session.get_bind().dialect.name == "postgresql":
        await insert_from_arrays(session, _rollup, rows, _ADD_COUNTS)
        return
    statement = sqlite.insert(RefreshRollupRow).values(rows)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=list(_KEY), set_={"count": RefreshRollupRow.count + statement.excluded["count"]}
        )
    )


async def in_outbox(session: AsyncSession, event_id: uuid.UUID) -> bool:
    """Whether an outcome's event is stored already: the outcome was, and was counted then."""
    return (await session.scalar(select(OutboxRow.id).where(OutboxRow.event_id == event_id))) is not None


async def prune_rollup(database: Database, now: datetime, retention_days: float = ROLLUP_RETENTION_DAYS) -> int:
    """Delete the hours older than ``retention_days``; how many rows went."""
    cutoff = hour_of(now - timedelta(days=retention_days))
    async with database.transaction() as session:
        result = await session.execute(delete(RefreshRollupRow).where(RefreshRollupRow.hour < cutoff))
    return int(result.rowcount)  # type: ignore[attr-defined]
