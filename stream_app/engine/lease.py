"""Holding a refresh lease: taking it, keeping it alive while the refresh runs, giving it back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from stream_app.db import Database
from stream_app.db.bulk import LeasedConnection, acquire_leases, take_over_lease
from stream_app.db.leases import lease_held, lease_owner, release_lease, renew_lease
from stream_app.errors import TokenRefreshError

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.1
# After a failed renewal (the database hiccupped), try again this soon.
_RENEW_RETRY_SECONDS = 1.0


class LeaseLost(TokenRefreshError):
    """The lease expired and someone else may hold it now: stop before touching the provider."""


class Lease:
    def __init__(self, database: Database, connection_id: uuid.UUID, owner: str, ttl: float) -> None:
        self._db = database
        self.connection_id = connection_id
        self.owner = owner
        self._ttl = ttl
        # Set once a fenced write has cleared the lease along with the outcome.
        self.released = False
        # Set when a renewal found someone else's lease (or none) on the row.
        self.lost = False
        # When the database last confirmed it (taken or renewed), by this process's clock.
        self._confirmed_at = time.monotonic()

    async def renew(self) -> None:
        """Extend the lease now; raises LeaseLost if it is no longer ours."""
        async with self._db.transaction() as session:
            if not await renew_lease(session, self.connection_id, self.owner, ttl=self._ttl):
                self.lost = True
        if self.lost:
            raise LeaseLost("refresh lease expired and was not renewed")
        self._confirmed_at = time.monotonic()

    async def ensure_held(self) -> None:
        """Before spending the refresh token: raise LeaseLost unless the lease is surely ours. One
        confirmed less than a third of its lifetime ago still has two thirds to run; an older
        one is renewed (and so checked) now."""
        if self.lost:
            raise LeaseLost("refresh lease lost while held")
        if time.monotonic() - self._confirmed_at > self._ttl / 3:
            await self.renew()

    @contextlib.asynccontextmanager
    async def kept_alive(self) -> AsyncIterator[None]:
        """Renew the lease every third of its lifetime in the background while the body runs:
        a slow provider, a long wait for a slot or a commit that retries cannot outlive it."""
        task = asyncio.create_task(self._keep_alive())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _keep_alive(self) -> None:
        delay = self._ttl / 3
        while not self.released:
            await asyncio.sleep(delay)
            try:
                await self.renew()
                delay = self._ttl / 3
            except LeaseLost:
                log.warning("Refresh lease lost while held; the outcome will be fenced on the spent token")
                return
            except Exception as exc:  # the database is unreachable: keep trying while it lasts
                log.warning("Renewing a refresh lease failed (%s); retrying", type(exc).__name__)
                delay = _RENEW_RETRY_SECONDS

    async def release(self) -> None:
        """Give the lease back; best effort (an unreleased lease lapses at its expiry)."""
        if self.released:
            return
        self.released = True
        try:
            async with self._db.transaction() as session:
                await release_lease(session, self.connection_id, self.owner)
        except Exception as exc:
            log.warning("Releasing a refresh lease failed (%s); it lapses by itself", type(exc).__name__)


class Leases:
    def __init__(self, database: Database, ttl: float) -> None:
        self._db = database
        self._ttl = ttl
        self._owner_prefix = process_name()

    async def acquire_many(
        self, session: AsyncSession, connection_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, tuple[Lease, LeasedConnection]]:
        """The leases taken, with their rows as they are once held (in ``session``'s transaction,
        held once it commits); a connection someone else holds is left out.

        The leases of one call share an owner id: each is still fenced on its own row, and no
        other call (in this process or any other) ever uses that id."""
        owner = f"{self._owner_prefix}:{uuid.uuid4().hex[:8]}"
        rows = await acquire_leases(session, connection_ids, owner, ttl=self._ttl)
        for connection_id in connection_ids:
            if connection_id in rows:
                continue
            holder = await lease_owner(session, connection_id)
            if holder is not None and _died_on_this_host(holder):
                # A process of this host that was killed (kill -9, OOM) while refreshing: its
                # lease would block the connection until it lapsed; take it over now.
                log.warning("Taking over the refresh lease of a process that died on this host")
                row = await take_over_lease(session, connection_id, holder, owner, ttl=self._ttl)
                if row is not None:
                    rows[connection_id] = row
        return {
            connection_id: (Lease(self._db, connection_id, owner, self._ttl), row)
            for connection_id, row in rows.items()
        }

    async def wait_for_release(self, connection_id: uuid.UUID) -> None:
        """Return once nobody holds the lease (released, or expired after a holder died)."""
        while True:
            async with self._db.sessions() as session:
                if not await lease_held(session, connection_id):
                    return
            await asyncio.sleep(_POLL_SECONDS)


def process_name() -> str:
    """This process among the workers: ``host:pid`` (the prefix of its lease owners)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _died_on_this_host(owner: str) -> bool:
    """Whether a lease owner (``host:pid:nonce``) is a process of this host that no longer runs.
    Only a process that surely is gone counts; anything unclear waits for the lease to lapse."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    host, pid = parts[0], int(parts[1])
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, under another user
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed process its parent has not reaped yet still answers signal 0."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
