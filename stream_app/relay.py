"""Publishes the outbox: every committed outcome event reaches Kafka at least once, and the
events of one key reach its topic in the order they were committed, however many relays run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

from stream_app.clock import utc_now
from stream_app.db import Database
from stream_app.db.outbox import mark_published, pending_events, take_relay_turn
from stream_app.failpoints import NO_FAILPOINTS
from stream_app.publisher import OutgoingRecord

log = logging.getLogger(__name__)

# Sends records in their order and returns once the broker acknowledged every one of them;
# raises if any failed (KafkaPublisher.send_many).
SendMany = Callable[[Sequence[OutgoingRecord]], Awaitable[object]]


class RelayRound(NamedTuple):
    published: int
    # Another relay was publishing, so this one stood aside (that relay publishes instead).
    stood_aside: bool


class OutboxRelay:
    def __init__(
        self,
        database: Database,
        send_many: SendMany,
        *,
        batch_size: int = 200,
        failpoint: Callable[[str], None] = NO_FAILPOINTS,
        retry_after_standing_aside: float = 0.2,
    ) -> None:
        self._db = database
        self._failpoint = failpoint
        self._send_many = send_many
        self._batch_size = batch_size
        self._retry_after_standing_aside = retry_after_standing_aside
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        self._wakeup.set()

    async def publish_pending(self) -> RelayRound:
        """Publish what is pending, oldest first, batch after batch, unless another relay is
        publishing."""
        published = 0
        while True:
            sent = await self._publish_batch()
            if sent is None:
                return RelayRound(published, stood_aside=True)
            published += sent
            if sent < self._batch_size:
                return RelayRound(published, stood_aside=False)

    async def _publish_batch(self) -> int | None:
        """One batch in one transaction; None when it is another relay's turn."""
        async with self._db.transaction() as session:
            if not await take_relay_turn(session):
                return None
            rows = await pending_events(session, self._batch_size)
            if not rows:
                return 0
            # In id order, and every record acknowledged before any row is marked: a failure
            # leaves the whole batch to be sent again (consumers dedupe on event_id).
            await self._send_many([OutgoingRecord(row.topic, row.key, row.payload) for row in rows])
            self._failpoint("after_outbox_send")
            await mark_published(session, [row.id for row in rows], utc_now())
            return len(rows)

    async def run(self, poll_interval: float = 1.0) -> None:
        """Publish whenever woken, and at least every ``poll_interval`` (for rows written by
        other processes, such as on-demand refreshes in the product's API servers)."""
        timeout = poll_interval
        while True:
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except TimeoutError:
                pass
            self._wakeup.clear()
            timeout = poll_interval
            try:
                round_ = await self.publish_pending()
            except Exception:
                log.exception("Outbox relay failed; will retry")
                await asyncio.sleep(poll_interval)
                continue
            if round_.stood_aside:
                # The relay publishing may have read its batch before our newest rows committed:
                # look again soon rather than a whole interval later.
                timeout = self._retry_after_standing_aside
