"""Recognising input events already applied (Kafka delivers at least once)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from stream_app.db.arrays import insert_from_arrays
from stream_app.db.models import ProcessedEventRow


async def mark_processed_once(
    session: AsyncSession, events: Sequence[tuple[uuid.UUID, str]], now: datetime
) -> set[uuid.UUID]:
    """Record (event_id, topic) pairs as processed; the ids not recorded before, so the caller
    applies only those. Within the transaction that applies them, so the mark and the effect
    are one (another consumer applying the same event waits for this one and finds it)."""
    unique = {event_id: topic for event_id, topic in events}
    if not unique:
        return set()
    rows = [{"event_id": event_id, "topic": topic, "processed_at": now} for event_id, topic in unique.items()]
    if session.get_bind().dialect.name == "postgresql":
        table = cast(Table, ProcessedEventRow.__table__)
        result = await insert_from_arrays(session, table, rows, "ON CONFLICT (event_id) DO NOTHING RETURNING event_id")
        return set(result.scalars())
    statement = (
        sqlite.insert(ProcessedEventRow)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(ProcessedEventRow.event_id)
    )
    return set((await session.execute(statement)).scalars())


async def forget_processed_before(session: AsyncSession, cutoff: datetime) -> int:
    result = await session.execute(delete(ProcessedEventRow).where(ProcessedEventRow.processed_at < cutoff))
    return int(result.rowcount)  # type: ignore[attr-defined]
