"""The circuit breaker's changes as `provider.circuit_changed` events, through the outbox.

Why the outbox: a change must not be lost while the broker is away, and the outbox's relay
already publishes at least once, in order, whatever the broker does. Its rows are
(topic, key, payload): a platform-keyed event fits as well as a connection's; what it does not
have is a transaction of its own to join, since a circuit changes in memory, not in a row. So
the change is queued here and written in a transaction of its own by a background writer: the
refresh whose call changed the circuit never waits for the database. The writer retries while
the database is away; what it has not written when the process stops is logged as lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from schemas import ProviderCircuitChanged
from stream_app.backoff import Backoff
from stream_app.clock import utc_now
from stream_app.db import Database
from stream_app.db.outbox import add_records
from stream_app.engine.breaker import CircuitChange, CircuitState

log = logging.getLogger(__name__)

# A bound that only a database away for a very long time can reach: a platform's circuit
# changes at most twice per cool-down.
MAX_PENDING = 1000


class CircuitEvents:
    """``on_change`` for the breaker: never blocks, never raises into the refresh."""

    def __init__(
        self,
        database: Database,
        topic: str,
        on_outbox_write: Callable[[], None],
        *,
        worker: str,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._db = database
        self._topic = topic
        self._on_outbox_write = on_outbox_write
        self._worker = worker[:200]
        self._max_pending = max_pending
        self._pending: deque[ProviderCircuitChanged] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._retry = Backoff(base=0.5, cap=30.0, jitter_ratio=0.3)

    def __call__(self, change: CircuitChange) -> None:
        opened = change.state is CircuitState.OPEN
        event = ProviderCircuitChanged(
            platform=change.platform,
            state="open" if opened else "closed",
            worker=self._worker,
            cool_down_seconds=change.cool_down if opened else None,
            open_seconds=None if opened else change.open_for,
        )
        if opened:
            log.warning("Circuit of %s opened: no calls for %.0fs, then a trial", change.platform, change.cool_down)
        else:
            log.info("Circuit of %s closed after %.1fs", change.platform, change.open_for)
        if len(self._pending) >= self._max_pending:
            lost = self._pending.popleft()
            log.error(
                "Circuit event of %s (%s) dropped: %d not yet written", lost.platform, lost.state, len(self._pending)
            )
        self._pending.append(event)
        self._start_writer()

    def pending(self) -> int:
        """Changes not yet written to the outbox."""
        return len(self._pending)

    async def flush(self, grace_seconds: float) -> None:
        """Write what is pending, for up to ``grace_seconds`` (before the process stops);
        then what is left is logged as lost and the writer stopped."""
        writer = self._start_writer()
        if writer is None:
            return
        try:
            async with asyncio.timeout(grace_seconds):
                await asyncio.shield(writer)
        except TimeoutError:
            writer.cancel()
            log.error("%d circuit event(s) could not be written to the outbox: not published", len(self._pending))

    def _start_writer(self) -> asyncio.Task[None] | None:
        """The writer, started if needed; None when nothing is pending. Outside an event loop
        the changes wait for the next one (the engine always runs in one)."""
        if not self._pending:
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        if self._writer is None or self._writer.done() or self._writer.get_loop() is not loop:
            self._writer = loop.create_task(self._write_pending())
        return self._writer

    async def _write_pending(self) -> None:
        failures = 0
        while self._pending:
            batch = list(self._pending)
            try:
                async with self._db.transaction() as session:
                    await add_records(session, [self._record(event) for event in batch])
            except Exception as exc:  # the database is away: keep them, try again
                failures += 1
                delay = self._retry.delay(failures)
                log.warning(
                    "%d circuit event(s) not written to the outbox (%s); retrying in %.1fs",
                    len(batch),
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            written = {event.event_id for event in batch}
            # Not popleft: the oldest may have been dropped (the bound) while this batch was written.
            self._pending = deque(event for event in self._pending if event.event_id not in written)
            self._on_outbox_write()

    def _record(self, event: ProviderCircuitChanged) -> dict[str, object]:
        return {
            "event_id": event.event_id,
            "topic": self._topic,
            "key": event.key.encode(),
            "payload": event.to_bytes(),
            "created_at": utc_now(),
        }
