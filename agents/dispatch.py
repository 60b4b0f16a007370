"""Many refreshes in flight from one agent, without committing an offset past unfinished work.

Faust's own ``concurrency=N`` acks events in completion order, and its offset tracking then
commits past an event still in flight (faust-streaming#606): a crash loses it. Here one
agent instance reads each partition in order and hands every event to a task; the events
of a partition are acked strictly in offset order, each only once it and every event
before it are done. Faust therefore only ever sees a contiguous prefix of acks, and the
committed offset never passes unfinished work. A crash re-delivers what was in flight,
which the engine handles idempotently.

A job is expected to route its own failures. One that escapes anyway (a bug) is handed to the
``on_escape`` last resort (a minimal dead letter), and its event is acked all the same: an
event left unacked would hold its partition's committed offset for good, grow the queue of
events behind it, and stall every rebalance in Faust's ``wait_empty``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Gauge

from stream_app.metrics import REFRESHES_IN_FLIGHT
from stream_app.slots import Slots

log = logging.getLogger(__name__)

Ack = Callable[[Any], Awaitable[object]]
OnEscape = Callable[[Any, Exception], Awaitable[None]]


@dataclass
class _Pending:
    event: Any
    done: bool = False
    dropped: bool = False  # its partition was revoked meanwhile: its end acks nothing


@dataclass
class InOrderAcks:
    """Acks each partition's events in offset order, whatever order their work finishes in."""

    ack: Ack
    _pending: dict[Any, deque[_Pending]] = field(default_factory=dict)
    _progress: asyncio.Event = field(default_factory=asyncio.Event)

    def started(self, event: Any) -> _Pending:
        entry = _Pending(event)
        self._pending.setdefault(event.message.tp, deque()).append(entry)
        return entry

    async def finished(self, entry: _Pending) -> None:
        entry.done = True
        if not entry.dropped:
            queue = self._pending[entry.event.message.tp]
            while queue and queue[0].done:
                await self.ack(queue.popleft().event)
        self._progress.set()

    def in_flight(self) -> int:
        return sum(len(queue) for queue in self._pending.values())

    async def wait_until_done(self, partitions: set[Any]) -> None:
        """Return once every event of ``partitions`` started so far has been acked."""
        while any(self._pending.get(tp) for tp in partitions):
            self._progress.clear()
            await self._progress.wait()

    def forget(self, partition: Any) -> None:
        """Drop a revoked partition's unfinished events: they will be delivered again to its
        new owner, and finishing here acks nothing."""
        for entry in self._pending.pop(partition, ()):
            entry.dropped = True


class Dispatcher:
    """Runs up to ``max_in_flight`` jobs at once; ``submit`` waits for a free slot, which is the
    backpressure that stops the agent reading ahead of what the process can hold."""

    def __init__(
        self, acks: InOrderAcks, *, max_in_flight: int, on_escape: OnEscape, gauge: Gauge | None = REFRESHES_IN_FLIGHT
    ) -> None:
        self._acks = acks
        self._gauge = gauge
        self._on_escape = on_escape
        self._slots = Slots(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, event: Any, job: Callable[[], Awaitable[None]]) -> None:
        await self._slots.acquire()
        entry = self._acks.started(event)
        task = asyncio.create_task(self._run(entry, job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self, event: Any) -> None:
        """An event with nothing left to do: acked in its turn, without taking a slot."""
        await self._acks.finished(self._acks.started(event))

    async def _run(self, entry: _Pending, job: Callable[[], Awaitable[None]]) -> None:
        if self._gauge is not None:
            self._gauge.inc()
        try:
            try:
                await job()
            except Exception as exc:
                log.exception("Job failed outside its own error handling; taking the last resort")
                await self._last_resort(entry.event, exc)
        finally:
            if self._gauge is not None:
                self._gauge.dec()
            self._slots.release()
        # A job cancelled at shutdown never gets here: its event is not acked and comes back.
        await self._acks.finished(entry)

    async def _last_resort(self, event: Any, exc: Exception) -> None:
        try:
            await self._on_escape(event, exc)
        except Exception:
            # Only a second bug gets here. Holding the event would stall the partition and every
            # rebalance; its position is in this line, and the record stays in its topic.
            log.critical(
                "Last resort failed for %s@%d; acked without a dead letter",
                event.message.tp,
                event.message.offset,
                exc_info=True,
            )

    async def drain(self) -> None:
        """Wait for every job in flight."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
