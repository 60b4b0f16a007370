"""Refreshes the scanning worker runs itself, outside Kafka: requests the broker would not
take in time (it is down or restarting), and repeats of requests that were lost (the worker
that had them died). Single flight still holds (the lease); outcomes still leave through the
outbox, relayed once the broker is back."""

from __future__ import annotations

import asyncio
import logging

from schemas import TokenExpiring
from stream_app.engine import RefreshEngine
from stream_app.metrics import LOCAL_REFRESHES
from stream_app.slots import Slots

log = logging.getLogger(__name__)


class LocalRefreshes:
    def __init__(self, engine: RefreshEngine, *, max_in_flight: int) -> None:
        self._engine = engine
        self._slots = Slots(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, events: list[TokenExpiring], why: str) -> None:
        """Refresh ``events`` in the background (returns at once)."""
        for event in events:
            if self._engine.in_flight(event.user_id, event.platform):
                continue  # already being refreshed here
            LOCAL_REFRESHES.labels(why).inc()
            task = asyncio.create_task(self._refresh(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _refresh(self, event: TokenExpiring) -> None:
        async with self._slots:
            try:
                await self._engine.refresh(event.user_id, event.platform, trigger=event.reason, wait_for_others=0)
            except Exception as exc:  # the next scan asks again
                log.warning("A refresh run outside Kafka failed (%s); the scan will ask again", type(exc).__name__)
