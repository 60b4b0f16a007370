"""Publishes the outbox: every committed outcome event reaches Kafka at least once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from stream_app.clock import utc_now
from stream_app.db import Database
from stream_app.db.outbox import mark_published, pending_events
from stream_app.failpoints import NO_FAILPOINTS

log = logging.getLogger(__name__)

# Sends one record and returns once the broker acknowledged it.
Send = Callable[[str, bytes, bytes], Awaitable[object]]


class OutboxRelay:
    def __init__(
        self,
        database: Database,
        send: Send,
        *,
        batch_size: int = 200,
        failpoint: Callable[[str], None] = NO_FAILPOINTS,
    ) -> None:
        self._db = database
        self._failpoint = failpoint
        self._send = send
        self._batch_size = batch_size
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        self._wakeup.set()

    async def publish_pending(self) -> int:
        """Publish what is pending, oldest first; returns how many were published."""
        published = 0
        while True:
            async with self._db.transaction() as session:
                rows = await pending_events(session, self._batch_size)
                # Rows stay locked until they are marked, so no other relay sends them too;
                # a crash before the mark means they are sent again (consumers dedupe on event_id).
                await asyncio.gather(*(self._send(row.topic, row.key, row.payload) for row in rows))
                if rows:
                    self._failpoint("after_outbox_send")
                await mark_published(session, [row.id for row in rows], utc_now())
            published += len(rows)
            if len(rows) < self._batch_size:
                return published

    async def run(self, poll_interval: float = 1.0) -> None:
        """Publish whenever woken, and at least every ``poll_interval`` (for rows written by
        other processes, such as on-demand refreshes in the product's API servers)."""
        while True:
            try:
                await asyncio.wait_for(self._wakeup.wait(), poll_interval)
            except TimeoutError:
                pass
            self._wakeup.clear()
            try:
                await self.publish_pending()
            except Exception:
                log.exception("Outbox relay failed; will retry")
                await asyncio.sleep(poll_interval)
