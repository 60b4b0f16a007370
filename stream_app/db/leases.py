"""The refresh lease on a connection row: at most one refresh in flight across every process.

A lease is an owner id and an expiry written on the row. Whoever holds an unexpired lease
refreshes; everyone else waits for it to go. A holder that stalls past its expiry loses it,
and its late writes are fenced off (they require the owner id still on the row). Expiries
are set and judged by the database's clock, so processes whose clocks drift still agree.
"""

from __future__ import annotations

import uuid

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from stream_app.db.clock import db_now
from stream_app.db.models import ConnectionRow


async def acquire_lease(
    session: AsyncSession, connection_id: uuid.UUID, owner: str, *, ttl: float
) -> ConnectionRow | None:
    """Take the lease if nobody holds an unexpired one; returns the row as it is now, or None."""
    result = await session.execute(
        update(ConnectionRow)
        .where(
            ConnectionRow.id == connection_id,
            or_(ConnectionRow.refresh_lease_expires_at.is_(None), ConnectionRow.refresh_lease_expires_at < db_now()),
        )
        .values(refresh_lease_owner=owner, refresh_lease_expires_at=db_now(ttl))
        .returning(ConnectionRow)
        .execution_options(synchronize_session=False)
    )
    return result.scalars().one_or_none()


async def lease_owner(session: AsyncSession, connection_id: uuid.UUID) -> str | None:
    """Who holds an unexpired lease on the connection, if anyone."""
    return await session.scalar(
        select(ConnectionRow.refresh_lease_owner).where(
            ConnectionRow.id == connection_id, ConnectionRow.refresh_lease_expires_at >= db_now()
        )
    )


async def renew_lease(session: AsyncSession, connection_id: uuid.UUID, owner: str, *, ttl: float) -> bool:
    result = await session.execute(
        update(ConnectionRow)
        .where(ConnectionRow.id == connection_id, ConnectionRow.refresh_lease_owner == owner)
        .values(refresh_lease_expires_at=db_now(ttl))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def release_lease(session: AsyncSession, connection_id: uuid.UUID, owner: str) -> None:
    await session.execute(
        update(ConnectionRow)
        .where(ConnectionRow.id == connection_id, ConnectionRow.refresh_lease_owner == owner)
        .values(refresh_lease_owner=None, refresh_lease_expires_at=None)
    )


async def lease_held(session: AsyncSession, connection_id: uuid.UUID) -> bool:
    """Whether somebody holds an unexpired lease on the connection."""
    held = await session.scalar(
        select(ConnectionRow.id).where(
            ConnectionRow.id == connection_id, ConnectionRow.refresh_lease_expires_at >= db_now()
        )
    )
    return held is not None
