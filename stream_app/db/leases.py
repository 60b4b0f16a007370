"""The refresh lease on a connection row: at most one refresh in flight across every process.

A lease is an owner id and an expiry written on the row. Whoever holds an unexpired lease
refreshes; everyone else waits for it to go. A holder that stalls past its expiry loses it,
and its late writes are fenced off (they require the owner id still on the row).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from stream_app.db.models import ConnectionRow


async def acquire_lease(
    session: AsyncSession, connection_id: uuid.UUID, owner: str, *, now: datetime, until: datetime
) -> ConnectionRow | None:
    """Take the lease if nobody holds an unexpired one; returns the row as it is now, or None."""
    result = await session.execute(
        update(ConnectionRow)
        .where(
            ConnectionRow.id == connection_id,
            or_(ConnectionRow.refresh_lease_expires_at.is_(None), ConnectionRow.refresh_lease_expires_at < now),
        )
        .values(refresh_lease_owner=owner, refresh_lease_expires_at=until)
        .returning(ConnectionRow)
        .execution_options(synchronize_session=False)
    )
    return result.scalars().one_or_none()


async def renew_lease(session: AsyncSession, connection_id: uuid.UUID, owner: str, *, until: datetime) -> bool:
    result = await session.execute(
        update(ConnectionRow)
        .where(ConnectionRow.id == connection_id, ConnectionRow.refresh_lease_owner == owner)
        .values(refresh_lease_expires_at=until)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def release_lease(session: AsyncSession, connection_id: uuid.UUID, owner: str) -> None:
    await session.execute(
        update(ConnectionRow)
        .where(ConnectionRow.id == connection_id, ConnectionRow.refresh_lease_owner == owner)
        .values(refresh_lease_owner=None, refresh_lease_expires_at=None)
    )


async def lease_expiry(session: AsyncSession, connection_id: uuid.UUID, now: datetime) -> datetime | None:
    """When the current lease ends, or None if nobody holds one."""
    expires_at = await session.scalar(
        select(ConnectionRow.refresh_lease_expires_at).where(ConnectionRow.id == connection_id)
    )
    return expires_at if expires_at is not None and expires_at >= now else None
