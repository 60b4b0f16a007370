"""Queries of a disconnect: whether its event was applied, and the row of a connection never seen."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from stream_app.db.models import ConnectionRow, ProcessedEventRow


async def was_processed(session: AsyncSession, event_id: uuid.UUID) -> bool:
    found = await session.scalar(select(ProcessedEventRow.event_id).where(ProcessedEventRow.event_id == event_id))
    return found is not None


async def insert_if_absent(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Insert the row unless the connection has one already (a `connection.created` stored
    meanwhile); whether it was inserted."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(ConnectionRow)
        .values(id=uuid.uuid4(), version=0, consecutive_failures=0, **values)
        .on_conflict_do_nothing(index_elements=["user_id", "platform"])
        .returning(ConnectionRow.id)
    )
    return (await session.execute(statement)).first() is not None
