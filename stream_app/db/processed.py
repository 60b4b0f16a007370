"""Recognising input events already applied (Kafka delivers at least once)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

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
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(ProcessedEventRow)
        .values([{"event_id": event_id, "topic": topic, "processed_at": now} for event_id, topic in unique.items()])
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(ProcessedEventRow.event_id)
    )
    return set((await session.execute(statement)).scalars())


async def forget_processed_before(session: AsyncSession, cutoff: datetime) -> int:
    result = await session.execute(delete(ProcessedEventRow).where(ProcessedEventRow.processed_at < cutoff))
    return int(result.rowcount)  # type: ignore[attr-defined]
