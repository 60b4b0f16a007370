"""Queries on `platform_connections`. Every token handed in or out here is a ciphertext."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from stream_app.db.models import ConnectionRow


async def get_connection(session: AsyncSession, user_id: uuid.UUID, platform: str) -> ConnectionRow | None:
    result = await session.execute(
        select(ConnectionRow).where(ConnectionRow.user_id == user_id, ConnectionRow.platform == platform)
    )
    return result.scalar_one_or_none()


class Versioned(Protocol):
    """A row as it was read: which row, and its version then."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def version(self) -> int: ...


async def update_fenced(session: AsyncSession, row: Versioned, lease_owner: str, values: dict[str, Any]) -> bool:
    """Apply ``values`` and release the lease, only if nobody changed the row since it was read
    and the lease is still ours (a holder that stalled past its lease cannot overwrite)."""
    result = await session.execute(
        update(ConnectionRow)
        .where(
            ConnectionRow.id == row.id,
            ConnectionRow.version == row.version,
            ConnectionRow.refresh_lease_owner == lease_owner,
        )
        .values(version=ConnectionRow.version + 1, refresh_lease_owner=None, refresh_lease_expires_at=None, **values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def update_if(
    session: AsyncSession,
    connection_id: uuid.UUID,
    condition: Callable[[ConnectionRow], bool],
    values: dict[str, Any],
    *,
    lease_owner: str | None = None,
) -> bool:
    """Apply ``values`` if the row, locked as it is now, meets ``condition`` (a check the database
    cannot make, such as which token a ciphertext holds); releases the lease if ``lease_owner``
    holds it, and leaves anyone else's alone."""
    current = (
        await session.scalars(select(ConnectionRow).where(ConnectionRow.id == connection_id).with_for_update())
    ).one_or_none()
    if current is None or not condition(current):
        return False
    lease = {}
    if lease_owner is not None and current.refresh_lease_owner == lease_owner:
        lease = {"refresh_lease_owner": None, "refresh_lease_expires_at": None}
    await session.execute(
        update(ConnectionRow)
        .where(ConnectionRow.id == connection_id, ConnectionRow.version == current.version)
        .values(version=ConnectionRow.version + 1, **lease, **values)
        .execution_options(synchronize_session=False)
    )
    return True


async def forget_refresh_request(session: AsyncSession, connection_id: uuid.UUID) -> None:
    """The request was left to a refresh in flight elsewhere: the next scan after that refresh's
    lease ends (a holder that died) asks again, instead of waiting out the requeue delay."""
    await session.execute(
        update(ConnectionRow).where(ConnectionRow.id == connection_id).values(refresh_requested_at=None)
    )
