"""Group commit: many callers' small database writes carried out as one batch.

Each caller submits one item and awaits its own result. A flush starts at once when fewer
than ``max_concurrent`` are running; items submitted while flushes run wait and go together
in the next one. A lone caller therefore waits no longer than before, and a busy process
pays one transaction (one round trip per statement, one commit) per batch instead of per
item: the more callers, the bigger the batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741  # an item, as submitted
R = TypeVar("R")  # its result

# Carries out a batch; returns one result per item, in order (an exception for one that failed
# alone). Raising fails every item of the batch with that exception.
Flush = Callable[[Sequence[I]], Awaitable[Sequence[R | Exception]]]
# Told about the result of an item whose caller stopped waiting (cancelled) meanwhile.
Abandoned = Callable[[I, R], None]


class Coalescer(Generic[I, R]):
    def __init__(
        self,
        flush: Flush[I, R],
        *,
        max_batch: int,
        max_concurrent: int = 1,
        on_abandoned: Abandoned[I, R] | None = None,
    ) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._max_concurrent = max_concurrent
        self._on_abandoned = on_abandoned
        self._pending: deque[tuple[I, asyncio.Future[R]]] = deque()
        self._active = 0  # flushes running; counted here, not by their tasks' done callbacks,
        # which run a moment after a flush ends and would leave an item submitted then stranded
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: I) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._active < self._max_concurrent:
            self._active += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch: list[tuple[I, asyncio.Future[R]]] = []
                while self._pending and len(batch) < self._max_batch:
                    item, future = self._pending.popleft()
                    if not future.cancelled():  # its caller left before anything was done for it
                        batch.append((item, future))
                if batch:
                    await self._flush_batch(batch)
        except asyncio.CancelledError:  # the loop is closing: no flush will run for the rest
            while self._pending:
                self._pending.popleft()[1].cancel()
            raise
        finally:
            self._active -= 1

    async def _flush_batch(self, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        try:
            results = await self._flush([item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (the process stopping): nobody gets a result
            for _, future in batch:
                future.cancel()
            raise
        for (item, future), result in zip(batch, results, strict=True):
            if future.done():  # cancelled while the batch ran
                if self._on_abandoned is not None and not isinstance(result, Exception):
                    self._on_abandoned(item, result)
            elif isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
