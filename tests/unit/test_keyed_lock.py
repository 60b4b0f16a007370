"""KeyedLocks: one holder per key at a time, first come first served, nothing kept once a key
is free, and no turn lost to a cancellation."""

from __future__ import annotations

import asyncio
import random

from stream_app.keyed_lock import KeyedLocks


async def test_one_holder_per_key_in_arrival_order_and_keys_apart() -> None:
    locks = KeyedLocks()
    order: list[str] = []
    release = asyncio.Event()

    async def hold(key: str, name: str) -> None:
        async with locks.hold(key):
            order.append(name)
            await release.wait()

    tasks = [asyncio.create_task(hold("a", name)) for name in ("a1", "a2", "a3")]
    other = asyncio.create_task(hold("b", "b1"))
    await asyncio.sleep(0.01)
    assert order == ["a1", "b1"]  # b is not held up by a
    release.set()
    await asyncio.gather(*tasks, other)
    assert order == ["a1", "b1", "a2", "a3"]
    assert not locks.held("a") and not locks.held("b")


async def test_a_turn_cancelled_before_or_after_it_came_is_not_lost() -> None:
    locks = KeyedLocks()
    entered: list[str] = []
    first_may_leave = asyncio.Event()

    async def hold(name: str, until: asyncio.Event | None = None) -> None:
        async with locks.hold("k"):
            entered.append(name)
            if until is not None:
                await until.wait()

    first = asyncio.create_task(hold("first", first_may_leave))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(hold("cancelled while waiting"))
    handed = asyncio.create_task(hold("cancelled when handed"))
    last = asyncio.create_task(hold("last"))
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.sleep(0)
    first_may_leave.set()
    await asyncio.sleep(0)  # `first` leaves and hands the lock to `handed`...
    assert first.done() and not handed.done()
    handed.cancel()  # ...cancelled before it ran: the turn goes on to `last`
    await asyncio.gather(waiting, handed, return_exceptions=True)
    async with asyncio.timeout(1):
        await last
    assert entered == ["first", "last"]
    assert not locks.held("k")


async def test_under_random_cancellations_never_two_holders_and_nothing_left() -> None:
    locks = KeyedLocks()
    rng = random.Random(5)
    holding: dict[str, int] = {"a": 0, "b": 0}

    async def job(key: str) -> None:
        async with locks.hold(key):
            holding[key] += 1
            assert holding[key] == 1
            try:
                await asyncio.sleep(rng.choice([0, 0.001]))
            finally:
                holding[key] -= 1

    tasks = [asyncio.create_task(job(rng.choice("ab"))) for _ in range(300)]
    for task in rng.sample(tasks, 120):
        await asyncio.sleep(rng.choice([0, 0.0005]))
        task.cancel()
    async with asyncio.timeout(10):  # a lost turn would leave its key held for ever
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert not [r for r in results if isinstance(r, AssertionError)]
    assert not locks.held("a") and not locks.held("b")
