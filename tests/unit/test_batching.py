"""Group commit (stream_app.batching.Coalescer): who goes in which batch, and what each caller gets."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from stream_app.batching import Coalescer


class Recorder:
    """A flush that records its batches and holds each until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.started = asyncio.Event()

    async def flush(self, items: Sequence[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        self.started.set()
        await self.release.wait()
        return [ValueError(f"odd {i}") if i < 0 else i * 10 for i in items]


async def test_a_lone_item_is_flushed_at_once_and_gets_its_own_result() -> None:
    recorder = Recorder()
    batches: Coalescer[int, int] = Coalescer(recorder.flush, max_batch=10)

    assert await batches.submit(3) == 30
    assert recorder.batches == [[3]]


async def test_items_submitted_while_a_flush_runs_go_together_in_the_next() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batches: Coalescer[int, int] = Coalescer(recorder.flush, max_batch=10)
    first = asyncio.create_task(batches.submit(1))
    await recorder.started.wait()
    waiting = [asyncio.create_task(batches.submit(i)) for i in range(2, 6)]
    await asyncio.sleep(0)
    recorder.release.set()

    assert await asyncio.gather(first, *waiting) == [10, 20, 30, 40, 50]
    assert recorder.batches == [[1], [2, 3, 4, 5]]


async def test_a_batch_holds_at_most_max_batch_items() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batches: Coalescer[int, int] = Coalescer(recorder.flush, max_batch=2)
    tasks = [asyncio.create_task(batches.submit(i)) for i in range(5)]
    await asyncio.sleep(0)
    recorder.release.set()

    assert await asyncio.gather(*tasks) == [0, 10, 20, 30, 40]
    assert recorder.batches == [[0, 1], [2, 3], [4]]


async def test_at_most_max_concurrent_flushes_run_at_once() -> None:
    running = peak = 0

    async def flush(items: Sequence[int]) -> list[int | Exception]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return list(items)

    batches: Coalescer[int, int] = Coalescer(flush, max_batch=1, max_concurrent=3)

    assert await asyncio.gather(*(batches.submit(i) for i in range(12))) == list(range(12))
    assert peak == 3


async def test_an_item_that_fails_alone_fails_only_its_caller() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batches: Coalescer[int, int] = Coalescer(recorder.flush, max_batch=10)
    first = asyncio.create_task(batches.submit(0))
    await recorder.started.wait()
    good, bad = asyncio.create_task(batches.submit(1)), asyncio.create_task(batches.submit(-1))
    await asyncio.sleep(0)
    recorder.release.set()

    assert await first == 0 and await good == 10
    with pytest.raises(ValueError, match="odd -1"):
        await bad


async def test_a_flush_that_raises_fails_every_item_of_its_batch_only() -> None:
    calls = 0

    async def flush(items: Sequence[int]) -> list[int | Exception]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database away")
        return list(items)

    batches: Coalescer[int, int] = Coalescer(flush, max_batch=10)

    with pytest.raises(ConnectionError):
        await batches.submit(1)
    assert await batches.submit(2) == 2


async def test_a_caller_cancelled_during_its_batch_has_its_result_handed_to_on_abandoned() -> None:
    recorder = Recorder()
    recorder.release.clear()
    abandoned: list[tuple[int, int]] = []
    batches: Coalescer[int, int] = Coalescer(
        recorder.flush, max_batch=10, on_abandoned=lambda item, result: abandoned.append((item, result))
    )
    leaving = asyncio.create_task(batches.submit(7))
    await recorder.started.wait()
    leaving.cancel()
    recorder.release.set()
    with pytest.raises(asyncio.CancelledError):
        await leaving

    assert await batches.submit(8) == 80  # the next batch runs
    assert abandoned == [(7, 70)]


async def test_a_caller_cancelled_before_its_batch_is_left_out_of_it() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batches: Coalescer[int, int] = Coalescer(recorder.flush, max_batch=10)
    first = asyncio.create_task(batches.submit(1))
    await recorder.started.wait()
    leaving, staying = asyncio.create_task(batches.submit(2)), asyncio.create_task(batches.submit(3))
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    recorder.release.set()

    assert await first == 10 and await staying == 30
    assert recorder.batches == [[1], [3]]
