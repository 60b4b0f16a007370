"""In-order acks: the committed offset can never pass an event whose work is unfinished."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

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


async def test_dispatcher_runs_jobs_concurrently_up_to_the_limit() -> None:
    recorder = Recorder()
    dispatcher = Dispatcher(InOrderAcks(recorder), max_in_flight=3)
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


@pytest.mark.parametrize("failure", [RuntimeError("bug"), asyncio.CancelledError()])
async def test_a_job_that_fails_or_is_cancelled_is_never_acked_nor_is_anything_after_it(
    failure: BaseException,
) -> None:
    recorder = Recorder()
    dispatcher = Dispatcher(InOrderAcks(recorder), max_in_flight=10)
    gate = asyncio.Event()

    async def failing() -> None:
        await gate.wait()
        raise failure

    async def fine() -> None:
        return None

    await dispatcher.submit(event("p0", 0), fine)
    await dispatcher.submit(event("p0", 1), failing)
    await dispatcher.submit(event("p0", 2), fine)
    gate.set()
    await dispatcher.drain()
    assert recorder.acked == [("p0", 0)]
