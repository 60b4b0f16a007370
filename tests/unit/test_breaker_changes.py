"""The breaker reports one opening per outage and one closing when it ends (failed trials that
re-open it are not news), and the reports become `provider.circuit_changed` events that reach
the outbox in the background, however long the database is away, in order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from schemas import ProviderCircuitChanged
from stream_app.backoff import Backoff
from stream_app.engine import circuit_events
from stream_app.engine.breaker import CircuitBreaker, CircuitChange, CircuitState, Permit
from stream_app.engine.circuit_events import CircuitEvents

COOL_DOWN = 30


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorded:
    def __init__(self) -> None:
        self.changes: list[CircuitChange] = []

    def __call__(self, change: CircuitChange) -> None:
        self.changes.append(change)


def breaker(clock: Clock, on_change: Any) -> CircuitBreaker:
    return CircuitBreaker(
        failure_ratio=0.5, min_calls=4, window=60, cool_down=COOL_DOWN, clock=clock, on_change=on_change
    )


def permit(circuits: CircuitBreaker, platform: str) -> Permit:
    admitted = circuits.admit(platform)
    assert isinstance(admitted, Permit), f"put off by {admitted}s"
    return admitted


def call(circuits: CircuitBreaker, platform: str, *, ok: bool) -> None:
    with permit(circuits, platform) as admitted:
        admitted.succeeded() if ok else admitted.failed()


def trip(circuits: CircuitBreaker, platform: str) -> None:
    for _ in range(4):
        call(circuits, platform, ok=False)
    assert circuits.state(platform) is CircuitState.OPEN


def opened(platform: str) -> CircuitChange:
    return CircuitChange(platform, CircuitState.OPEN, cool_down=COOL_DOWN)


def closed(platform: str, after: float) -> CircuitChange:
    return CircuitChange(platform, CircuitState.CLOSED, open_for=after)


def test_an_outage_with_failed_trials_is_one_opening_then_one_closing_timed_from_the_first() -> None:
    clock, seen = Clock(), Recorded()
    circuits = breaker(clock, seen)
    trip(circuits, "spotify")
    assert seen.changes == [opened("spotify")]
    for _ in range(3):  # trials that fail: the circuit opens again, the outage goes on
        clock.now += COOL_DOWN
        call(circuits, "spotify", ok=False)
        assert circuits.state("spotify") is CircuitState.OPEN
    clock.now += COOL_DOWN
    with permit(circuits, "spotify"):
        pass  # a trial abandoned without a verdict: still half-open, nothing to say
    assert seen.changes == [opened("spotify")]
    clock.now += 5
    call(circuits, "spotify", ok=True)
    assert seen.changes == [opened("spotify"), closed("spotify", after=4 * COOL_DOWN + 5)]


def test_each_outage_and_each_platform_is_reported_on_its_own() -> None:
    clock, seen = Clock(), Recorded()
    circuits = breaker(clock, seen)
    trip(circuits, "spotify")
    clock.now += 1
    trip(circuits, "discord")
    clock.now += COOL_DOWN
    call(circuits, "spotify", ok=True)
    call(circuits, "discord", ok=True)
    clock.now += 100
    trip(circuits, "spotify")  # a second outage
    clock.now += COOL_DOWN
    call(circuits, "spotify", ok=True)
    assert seen.changes == [
        opened("spotify"),
        opened("discord"),
        closed("spotify", after=COOL_DOWN + 1),
        closed("discord", after=COOL_DOWN),
        opened("spotify"),
        closed("spotify", after=COOL_DOWN),
    ]


def test_calls_that_do_not_change_the_circuit_report_nothing() -> None:
    clock, seen = Clock(), Recorded()
    circuits = breaker(clock, seen)
    for ok in (True, True, False, True, False, True):  # a minority of failures
        call(circuits, "x", ok=ok)
    assert seen.changes == []
    clock.now += 61  # they leave the window
    slow = permit(circuits, "x")
    trip(circuits, "x")
    with slow:  # admitted before the opening, answers during it: says nothing
        slow.failed()
    assert circuits.admit("x") == COOL_DOWN  # put off, no change
    assert seen.changes == [opened("x")]


def test_a_report_that_fails_leaves_the_circuit_changed_and_the_call_unharmed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(change: CircuitChange) -> None:
        raise RuntimeError("the report's own failure")

    clock = Clock()
    circuits = breaker(clock, broken)
    with caplog.at_level(logging.ERROR):
        trip(circuits, "x")  # no exception reaches the caller
        clock.now += COOL_DOWN
        call(circuits, "x", ok=True)
    assert circuits.state("x") is CircuitState.CLOSED
    assert [r.getMessage() for r in caplog.records] == [
        "Reporting the x circuit's change to open failed",
        "Reporting the x circuit's change to closed failed",
    ]


class AwayDatabase:
    """A database whose transactions fail while ``away``; ``written`` holds the committed rows."""

    def __init__(self, away: int) -> None:
        self.away = away
        self.written: list[dict[str, Any]] = []
        self.attempts = 0

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[list[dict[str, Any]]]:
        self.attempts += 1
        if self.away:
            self.away -= 1
            raise ConnectionRefusedError("the database is away")
        batch: list[dict[str, Any]] = []
        yield batch
        self.written.extend(batch)


async def add_records(session: list[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> None:
    session.extend(rows)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(circuit_events, "add_records", add_records)
    monkeypatch.setattr(Backoff, "delay", lambda self, failures: 0.001)


async def test_changes_are_queued_at_once_and_reach_the_outbox_in_order_once_the_database_is_back() -> None:
    database = AwayDatabase(away=3)
    woken: list[int] = []
    events = CircuitEvents(database, "circuits.t", lambda: woken.append(1), worker="host-a:4242")  # type: ignore[arg-type]

    events(CircuitChange("spotify", CircuitState.OPEN, cool_down=30.0))
    events(CircuitChange("spotify", CircuitState.CLOSED, open_for=61.5))
    assert database.attempts == 0 and events.pending() == 2  # the caller did not wait for a write

    await events.flush(grace_seconds=10)

    assert events.pending() == 0 and database.attempts == 4 and woken
    assert [(row["topic"], row["key"]) for row in database.written] == [("circuits.t", b"spotify")] * 2
    sent = [ProviderCircuitChanged.model_validate(json.loads(row["payload"])) for row in database.written]
    assert [row["event_id"] for row in database.written] == [event.event_id for event in sent]
    assert [(e.state, e.worker, e.cool_down_seconds, e.open_seconds) for e in sent] == [
        ("open", "host-a:4242", 30.0, None),
        ("closed", "host-a:4242", None, 61.5),
    ]


async def test_changes_the_database_never_took_are_logged_as_lost_at_the_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    database = AwayDatabase(away=10**9)
    events = CircuitEvents(database, "circuits.t", lambda: None, worker="w")  # type: ignore[arg-type]
    events(CircuitChange("x", CircuitState.OPEN, cool_down=30.0))

    with caplog.at_level(logging.ERROR):
        await events.flush(grace_seconds=0.05)

    assert database.written == [] and events.pending() == 1
    assert "1 circuit event(s) could not be written to the outbox: not published" in caplog.messages
    await asyncio.sleep(0)  # the cancelled writer ends


async def test_past_the_bound_the_oldest_change_is_dropped_with_an_error(caplog: pytest.LogCaptureFixture) -> None:
    database = AwayDatabase(away=0)
    events = CircuitEvents(database, "circuits.t", lambda: None, worker="w", max_pending=2)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR):
        for platform in ("a", "b", "c"):
            events(CircuitChange(platform, CircuitState.OPEN, cool_down=30.0))
    await events.flush(grace_seconds=10)
    assert [row["key"] for row in database.written] == [b"b", b"c"]
    assert "Circuit event of a (open) dropped: 1 not yet written" in caplog.messages
