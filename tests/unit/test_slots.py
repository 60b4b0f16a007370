"""Slots: a semaphore, first come first served, that never loses or leaks a slot whatever is
cancelled when."""

from __future__ import annotations

import asyncio
import random

import pytest

from stream_app.slots import Slots


async def test_it_admits_up_to_its_value_then_serves_waiters_in_order() -> None:
    slots = Slots(2)
    await slots.acquire()
    await slots.acquire()
    assert slots.locked()
    order: list[int] = []

    async def wait(n: int) -> None:
        await slots.acquire()
        order.append(n)

    waiters = [asyncio.create_task(wait(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert order == []
    for _ in range(3):
        slots.release()
        await asyncio.sleep(0)
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]


async def test_a_waiter_cancelled_before_or_after_it_was_served_loses_no_slot() -> None:
    slots = Slots(1)
    await slots.acquire()
    queued = [asyncio.create_task(slots.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    queued[0].cancel()  # before it was served
    slots.release()  # served: the second
    queued[2].cancel()
    await asyncio.sleep(0)
    assert queued[1].done() and not queued[1].cancelled()
    slots.release()
    await asyncio.sleep(0)
    assert not slots.locked()  # the third was cancelled: the slot is free again

    await slots.acquire()
    handed = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()  # handed the slot...
    handed.cancel()  # ...and cancelled before it ran: the slot goes back
    with pytest.raises(asyncio.CancelledError):
        await handed
    assert not slots.locked()


async def test_under_random_cancellations_it_never_exceeds_its_value_nor_stalls() -> None:
    slots = Slots(3)
    rng = random.Random(11)
    holding = 0
    most = 0
    finished = 0

    async def job() -> None:
        nonlocal holding, most, finished
        async with slots:
            holding += 1
            most = max(most, holding)
            try:
                await asyncio.sleep(rng.choice([0, 0.001, 0.002]))
            finally:
                holding -= 1
        finished += 1

    tasks = [asyncio.create_task(job()) for _ in range(300)]
    for task in rng.sample(tasks, 100):
        await asyncio.sleep(rng.choice([0, 0.001]))
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert most <= 3
    assert holding == 0
    assert not slots.locked()
    async with asyncio.timeout(1):  # every slot is back: three at once without waiting
        for _ in range(3):
            await slots.acquire()
    assert finished >= 200
