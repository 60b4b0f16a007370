"""In-order acks: the committed offset can never pass an event whose work is unfinished."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from agents.dispatch import Dispatcher, InOrderAcks


@dataclass(frozen=True)
class Message:
    tp: str
    offset: int


@dataclass(frozen=True)
class Event:
    message: Message


def event(tp: str, offset: int) -> Event:
    return Event(Message(tp, offset))


class Recorder:
    def __init__(self) -> None:
        self.acked: list[tuple[str, int]] = []

    async def __call__(self, record: Any) -> None:
        self.acked.append((record.message.tp, record.message.offset))


async def test_acks_follow_offsets_not_completion_order() -> None:
    recorder = Recorder()
    acks = InOrderAcks(recorder)
    entries = {offset: acks.started(event("p0", offset)) for offset in (10, 11, 12)}
    other = acks.started(event("p1", 0))

    await acks.finished(entries[12])
    await acks.finished(entries[11])
    assert recorder.acked == []  # 10 is still running: nothing may be acked in p0
    await acks.finished(other)
    assert recorder.acked == [("p1", 0)]  # partitions are independent
    await acks.finished(entries[10])
    assert recorder.acked == [("p1", 0), ("p0", 10), ("p0", 11), ("p0", 12)]
    assert acks.in_flight() == 0


class LastResort:
    def __init__(self, failure: Exception | None = None) -> None:
        self.failure = failure
        self.calls: list[tuple[tuple[str, int], str]] = []

    async def __call__(self, record: Any, exc: Exception) -> None:
        self.calls.append(((record.message.tp, record.message.offset), type(exc).__name__))
        if self.failure is not None:
            raise self.failure


def never_escapes() -> LastResort:
    return LastResort(AssertionError("no job should escape here"))


async def test_dispatcher_runs_jobs_concurrently_up_to_the_limit() -> None:
    recorder = Recorder()
    dispatcher = Dispatcher(InOrderAcks(recorder), max_in_flight=3, on_escape=never_escapes())
    running = 0
    peak = 0
    release = asyncio.Event()

    async def job() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    submitted = asyncio.create_task(_submit_all(dispatcher, [event("p0", n) for n in range(5)], job))
    await asyncio.sleep(0.05)
    assert peak == 3 and not submitted.done()  # the fourth submit waits for a slot: backpressure
    release.set()
    await submitted
    await dispatcher.drain()
    assert recorder.acked == [("p0", n) for n in range(5)]


async def _submit_all(dispatcher: Dispatcher, events: list[Event], job: Any) -> None:
    for item in events:
        await dispatcher.submit(item, job)


async def test_a_job_that_escapes_takes_the_last_resort_and_is_acked_in_order() -> None:
    """An event left unacked would hold its partition (and every rebalance) for good."""
    recorder = Recorder()
    last_resort = LastResort()
    dispatcher = Dispatcher(InOrderAcks(recorder), max_in_flight=10, on_escape=last_resort)
    gate = asyncio.Event()

    async def failing() -> None:
        await gate.wait()
        raise RuntimeError("bug")

    async def fine() -> None:
        return None

    await dispatcher.submit(event("p0", 0), fine)
    await dispatcher.submit(event("p0", 1), failing)
    await dispatcher.submit(event("p0", 2), fine)
    await asyncio.sleep(0)
    assert recorder.acked == [("p0", 0)]  # 1 is still running: 2 waits behind it
    gate.set()
    await dispatcher.drain()
    assert last_resort.calls == [(("p0", 1), "RuntimeError")]
    assert recorder.acked == [("p0", 0), ("p0", 1), ("p0", 2)]


async def test_a_last_resort_that_fails_still_lets_the_partition_move_on() -> None:
    recorder = Recorder()
    last_resort = LastResort(RuntimeError("second bug"))
    dispatcher = Dispatcher(InOrderAcks(recorder), max_in_flight=10, on_escape=last_resort)

    async def failing() -> None:
        raise KeyError("bug")

    async def fine() -> None:
        return None

    await dispatcher.submit(event("p0", 0), failing)
    await dispatcher.submit(event("p0", 1), fine)
    await dispatcher.drain()
    assert last_resort.calls == [(("p0", 0), "KeyError")]
    assert recorder.acked == [("p0", 0), ("p0", 1)]


async def test_a_cancelled_job_is_never_acked_nor_is_anything_after_it() -> None:
    """Cancelled at shutdown: the event and those after it come back after the restart."""
    recorder = Recorder()
    dispatcher = Dispatcher(InOrderAcks(recorder), max_in_flight=10, on_escape=never_escapes())
    gate = asyncio.Event()

    async def cancelled() -> None:
        await gate.wait()
        raise asyncio.CancelledError

    async def fine() -> None:
        return None

    await dispatcher.submit(event("p0", 0), fine)
    await dispatcher.submit(event("p0", 1), cancelled)
    await dispatcher.submit(event("p0", 2), fine)
    gate.set()
    await dispatcher.drain()
    assert recorder.acked == [("p0", 0)]


async def test_a_settled_duplicate_takes_no_slot_and_is_acked_after_the_work_before_it() -> None:
    recorder = Recorder()
    dispatcher = Dispatcher(InOrderAcks(recorder), max_in_flight=1, on_escape=never_escapes())
    release = asyncio.Event()
    await dispatcher.submit(event("p0", 1), release.wait)  # the one slot: a refresh in flight
    for offset in (2, 3, 4):  # the scan's repeats for the same connection
        await asyncio.wait_for(dispatcher.settled(event("p0", offset)), 1)  # no slot needed
    assert recorder.acked == []  # never committed past the refresh still running
    release.set()
    await dispatcher.drain()
    assert recorder.acked == [("p0", 1), ("p0", 2), ("p0", 3), ("p0", 4)]
