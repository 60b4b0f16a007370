"""The transactional outbox: outcome events are written with the state change they report
and published afterwards, so a crash between commit and send cannot lose one."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import Event
from stream_app.db.models import OutboxRow


def add_event(session: AsyncSession, topic: str, event: Event, now: datetime) -> None:
    session.add(
        OutboxRow(
            event_id=event.event_id,
            topic=topic,
            key=event.key.encode(),
            payload=event.to_bytes(),
            created_at=now,
        )
    )


async def pending_events(session: AsyncSession, limit: int) -> Sequence[OutboxRow]:
    query = select(OutboxRow).where(OutboxRow.published_at.is_(None)).order_by(OutboxRow.id).limit(limit)
    # Several workers relay at once; each takes rows nobody else holds (SQLite has one writer).
    query = query.with_for_update(skip_locked=True)
    return (await session.execute(query)).scalars().all()


async def mark_published(session: AsyncSession, ids: Sequence[int], now: datetime) -> None:
    if ids:
        await session.execute(update(OutboxRow).where(OutboxRow.id.in_(ids)).values(published_at=now))
