"""Holding a refresh lease: taking it, keeping it alive through long waits, giving it back."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from stream_app.clock import utc_now
from stream_app.db import ConnectionRow, Database
from stream_app.db.leases import acquire_lease, lease_expiry, release_lease, renew_lease
from stream_app.errors import TokenRefreshError

_POLL_SECONDS = 0.1


class LeaseLost(TokenRefreshError):
    """The lease expired and someone else may hold it now: stop before touching the provider."""


class Lease:
    def __init__(
        self,
        database: Database,
        connection_id: uuid.UUID,
        owner: str,
        ttl: float,
        sleep: Callable[[float], Awaitable[Any]],
    ) -> None:
        self._db = database
        self.connection_id = connection_id
        self.owner = owner
        self._ttl = ttl
        self._sleep = sleep
        # Set once a fenced write has cleared the lease along with the outcome.
        self.released = False

    async def renew(self) -> None:
        async with self._db.transaction() as session:
            if not await renew_lease(session, self.connection_id, self.owner, until=_until(self._ttl)):
                raise LeaseLost("refresh lease expired and was not renewed")

    async def sleep(self, seconds: float) -> None:
        """Sleep while keeping the lease alive (renewed every third of its lifetime)."""
        remaining = seconds
        while remaining > 0:
            chunk = min(remaining, self._ttl / 3)
            await self._sleep(chunk)
            remaining -= chunk
            await self.renew()

    async def release(self) -> None:
        if self.released:
            return
        self.released = True
        async with self._db.transaction() as session:
            await release_lease(session, self.connection_id, self.owner)


class Leases:
    def __init__(self, database: Database, ttl: float, sleep: Callable[[float], Awaitable[Any]]) -> None:
        self._db = database
        self._ttl = ttl
        self._sleep = sleep
        self._owner_prefix = f"{socket.gethostname()}:{os.getpid()}"

    async def acquire(self, connection_id: uuid.UUID) -> tuple[Lease, ConnectionRow] | None:
        """The lease and the row as it is once held, or None while someone else holds it."""
        owner = f"{self._owner_prefix}:{uuid.uuid4().hex[:8]}"
        async with self._db.transaction() as session:
            row = await acquire_lease(session, connection_id, owner, now=utc_now(), until=_until(self._ttl))
        if row is None:
            return None
        return Lease(self._db, connection_id, owner, self._ttl, self._sleep), row

    async def wait_for_release(self, connection_id: uuid.UUID) -> None:
        """Return once nobody holds the lease (released, or expired after a holder died)."""
        while True:
            async with self._db.sessions() as session:
                if await lease_expiry(session, connection_id, utc_now()) is None:
                    return
            await asyncio.sleep(_POLL_SECONDS)


def _until(ttl: float) -> datetime:
    return utc_now() + timedelta(seconds=ttl)
