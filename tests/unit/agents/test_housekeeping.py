"""The leader's housekeeping (forgetting old processed event ids, pruning published outbox
events) runs on its first check about a minute after the worker starts, then hourly: Faust's
timers sleep their interval before the first run, so an hourly timer never ran on a leader
restarted more often than hourly. A run is never started twice at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import pytest

from agents import scheduler
from agents.context import WorkerContext
from stream_app.settings import load_settings

HOUSEKEEPING = {"forget_processed_events", "prune_outbox"}


@dataclass
class Timer:
    interval: float
    on_leader: bool
    run: Callable[[], Awaitable[None]]


class TimerApp:
    """Records the timers ``attach`` defines (Faust's ``app.timer``), to be run by hand."""

    def __init__(self) -> None:
        self.timers: dict[str, Timer] = {}

    def timer(self, interval: float, *, on_leader: bool, name: str) -> Callable[[Any], Any]:
        def define(fun: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
            self.timers[name] = Timer(interval, on_leader, fun)
            return fun

        return define


def attached(monkeypatch: pytest.MonkeyPatch, encryption_key: str, runs: list[str]) -> dict[str, Timer]:
    def job(name: str) -> Callable[..., Awaitable[None]]:
        async def run(*args: object) -> None:
            runs.append(name)

        return run

    monkeypatch.setattr(scheduler, "forget_old_processed_events", job("forget"))
    monkeypatch.setattr(scheduler, "prune_published_outbox", job("prune"))
    app = TimerApp()
    context = SimpleNamespace(
        app=app,
        settings=load_settings(encryption_key=encryption_key),
        service=SimpleNamespace(engine=object(), database=object()),
        publisher=SimpleNamespace(send_many=None),
        topic_names={"token.expiring": "token.expiring"},
    )
    scheduler.attach(cast(WorkerContext, context))
    return {name: timer for name, timer in app.timers.items() if name in HOUSEKEEPING}


async def test_housekeeping_first_runs_a_minute_after_a_leader_starts(
    monkeypatch: pytest.MonkeyPatch, encryption_key: str
) -> None:
    runs: list[str] = []
    timers = attached(monkeypatch, encryption_key, runs)

    assert set(timers) == HOUSEKEEPING
    for timer in timers.values():
        assert timer.on_leader
        assert timer.interval <= 60  # the first tick comes one interval after start

    for timer in timers.values():
        await timer.run()  # the first tick runs it
    assert sorted(runs) == ["forget", "prune"]

    for timer in timers.values():
        await timer.run()  # the next minute's does not
    assert sorted(runs) == ["forget", "prune"]


async def test_a_job_runs_again_once_its_interval_has_passed() -> None:
    now = 1000.0
    runs: list[float] = []

    async def job() -> None:
        runs.append(now)

    due = scheduler.AtMostEvery(3600, job, clock=lambda: now)
    assert await due()
    now += 3599
    assert not await due()
    now += 1
    assert await due()
    assert runs == [1000.0, 4600.0]


async def test_a_job_is_not_started_again_while_it_runs() -> None:
    release = asyncio.Event()
    started = 0

    async def job() -> None:
        nonlocal started
        started += 1
        await release.wait()

    due = scheduler.AtMostEvery(0, job)  # due at every call, but for the run under way
    first = asyncio.create_task(due())
    await asyncio.sleep(0)
    assert started == 1
    assert not await asyncio.wait_for(due(), 5)
    release.set()
    assert await asyncio.wait_for(first, 5)
    assert started == 1
    assert await asyncio.wait_for(due(), 5)  # once it ended, it runs again
    assert started == 2
