"""Many refreshes in flight from one agent, without committing an offset past unfinished work.

Faust's own ``concurrency=N`` acks events in completion order, and its offset tracking then
commits past an event still in flight (faust-streaming#606): a crash loses it. Here one
agent instance reads each partition in order and hands every event to a task; the events
of a partition are acked strictly in offset order, each only once it and every event
before it are done. Faust therefore only ever sees a contiguous prefix of acks, and the
committed offset never passes unfinished work. A crash re-delivers what was in flight,
which the engine handles idempotently.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from stream_app.metrics import REFRESHES_IN_FLIGHT

log = logging.getLogger(__name__)

Ack = Callable[[Any], Awaitable[object]]


@dataclass
class _Pending:
    event: Any
    done: bool = False


@dataclass
class InOrderAcks:
    """Acks each partition's events in offset order, whatever order their work finishes in."""

    ack: Ack
    _pending: dict[Any, deque[_Pending]] = field(default_factory=dict)

    def started(self, event: Any) -> _Pending:
        entry = _Pending(event)
        self._pending.setdefault(event.message.tp, deque()).append(entry)
        return entry

    async def finished(self, entry: _Pending) -> None:
        entry.done = True
        queue = self._pending[entry.event.message.tp]
        while queue and queue[0].done:
            await self.ack(queue.popleft().event)

    def in_flight(self) -> int:
        return sum(len(queue) for queue in self._pending.values())


class Dispatcher:
    """Runs up to ``max_in_flight`` jobs at once; ``submit`` waits for a free slot, which is the
    backpressure that stops the agent reading ahead of what the process can hold."""

    def __init__(self, acks: InOrderAcks, *, max_in_flight: int) -> None:
        self._acks = acks
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, event: Any, job: Callable[[], Awaitable[None]]) -> None:
        await self._slots.acquire()
        entry = self._acks.started(event)
        task = asyncio.create_task(self._run(entry, job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, entry: _Pending, job: Callable[[], Awaitable[None]]) -> None:
        REFRESHES_IN_FLIGHT.inc()
        try:
            await job()
        except Exception:
            # Jobs route their own failures; one that escapes is a bug. Its event is not acked,
            # so it (and what follows it in the partition) is delivered again after a restart.
            log.exception("Job failed; its event stays unacknowledged")
            return
        finally:
            REFRESHES_IN_FLIGHT.dec()
            self._slots.release()
        # A job cancelled at shutdown never gets here: its event is not acked and comes back.
        await self._acks.finished(entry)

    async def drain(self) -> None:
        """Wait for every job in flight."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
