"""Recognising input events already applied (Kafka delivers at least once)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from stream_app.db.models import ProcessedEventRow


async def already_processed(session: AsyncSession, event_id: uuid.UUID) -> bool:
    found = await session.scalar(select(ProcessedEventRow.event_id).where(ProcessedEventRow.event_id == event_id))
    return found is not None


def mark_processed(session: AsyncSession, event_id: uuid.UUID, topic: str, now: datetime) -> None:
    """Within the transaction that applies the event, so the mark and the effect are one."""
    session.add(ProcessedEventRow(event_id=event_id, topic=topic, processed_at=now))


async def forget_processed_before(session: AsyncSession, cutoff: datetime) -> int:
    result = await session.execute(delete(ProcessedEventRow).where(ProcessedEventRow.processed_at < cutoff))
    return int(result.rowcount)  # type: ignore[attr-defined]
