"""Outbox retention: published events are deleted once older than the retention period.

A row is only ever deleted after the relay marked it published; an unpublished row stays,
however old (it is an outcome the broker has yet to receive). Deletes go in chunks, each its
own short transaction, so pruning a large backlog never holds locks or one huge transaction
for long; the partial index on ``published_at`` (migration 0006) finds each chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import any_, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from stream_app.db.engine import Database
from stream_app.db.models import OutboxRow

DEFAULT_CHUNK_ROWS = 10_000


async def delete_published_chunk(session: AsyncSession, cutoff: datetime, limit: int) -> int:
    """Delete up to ``limit`` events published before ``cutoff``; how many were deleted."""
    doomed = (
        select(OutboxRow.id).where(OutboxRow.published_at.is_not(None), OutboxRow.published_at < cutoff).limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        # id = ANY(ARRAY(...)) plans as one primary-key probe per doomed id; a plain IN
        # (subquery) may be planned as a hash join over the whole table. SKIP LOCKED: two
        # leaders for a moment (a rebalance) share the work instead of waiting on each other.
        ids = func.array(doomed.with_for_update(skip_locked=True).scalar_subquery())
        statement = delete(OutboxRow).where(OutboxRow.id == any_(ids))
    else:
        statement = delete(OutboxRow).where(OutboxRow.id.in_(doomed.scalar_subquery()))
    result = await session.execute(statement.execution_options(synchronize_session=False))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def prune_published(
    database: Database,
    cutoff: datetime,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    on_chunk: Callable[[int], object] | None = None,
) -> int:
    """Delete every event published before ``cutoff``, ``chunk_rows`` per transaction; the
    total deleted. ``on_chunk`` hears each committed chunk's count, so progress is known even
    when a later chunk fails."""
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    total = 0
    while True:
        async with database.transaction() as session:
            deleted = await delete_published_chunk(session, cutoff, chunk_rows)
        total += deleted
        if deleted and on_chunk is not None:
            on_chunk(deleted)
        if deleted < chunk_rows:
            return total
