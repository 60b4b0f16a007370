"""The per-platform circuit breaker opens on a failing provider, cools down, tries once, and
always settles its trial, whatever happens to the call."""

from __future__ import annotations

import pytest

from stream_app.engine.breaker import CircuitBreaker, CircuitState, Permit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(failure_ratio=0.5, min_calls=4, window=60, cool_down=30, clock=clock)


def permit(circuits: CircuitBreaker, platform: str) -> Permit:
    admitted = circuits.admit(platform)
    assert isinstance(admitted, Permit), f"put off by {admitted}s"
    return admitted


def call(circuits: CircuitBreaker, platform: str, *, ok: bool) -> None:
    with permit(circuits, platform) as admitted:
        admitted.succeeded() if ok else admitted.failed()


def open_circuit(circuits: CircuitBreaker, platform: str) -> None:
    for _ in range(4):
        call(circuits, platform, ok=False)
    assert circuits.state(platform) is CircuitState.OPEN


def test_opens_when_most_calls_in_the_window_fail_and_only_for_that_platform() -> None:
    clock = Clock()
    circuits = breaker(clock)
    for ok in (True, False, False):
        call(circuits, "spotify", ok=ok)
    assert circuits.state("spotify") is CircuitState.CLOSED  # 3 calls: below min_calls
    call(circuits, "spotify", ok=False)
    assert circuits.state("spotify") is CircuitState.OPEN
    assert circuits.admit("spotify") == 30
    assert isinstance(circuits.admit("discord"), Permit)


def test_a_minority_of_failures_or_old_failures_do_not_open_it() -> None:
    clock = Clock()
    circuits = breaker(clock)
    for ok in (False, False, False):
        call(circuits, "google", ok=ok)
    clock.now += 61  # those failures leave the window
    for ok in (True, True, True, False):
        call(circuits, "google", ok=ok)
    assert circuits.state("google") is CircuitState.CLOSED


def test_after_the_cool_down_one_trial_decides() -> None:
    clock = Clock()
    circuits = breaker(clock)
    open_circuit(circuits, "x")
    clock.now += 10
    assert circuits.admit("x") == 20
    clock.now += 20
    trial = permit(circuits, "x")
    assert trial.trial and circuits.state("x") is CircuitState.HALF_OPEN
    assert circuits.admit("x") == 1.0  # everyone else waits for the trial
    with trial:
        trial.failed()
    assert circuits.state("x") is CircuitState.OPEN and circuits.admit("x") == 30
    clock.now += 30
    call(circuits, "x", ok=True)
    assert circuits.state("x") is CircuitState.CLOSED
    assert isinstance(circuits.admit("x"), Permit)


def test_a_trial_that_raises_something_unexpected_is_settled_as_a_failure() -> None:
    clock = Clock()
    circuits = breaker(clock)
    open_circuit(circuits, "x")
    clock.now += 30
    with pytest.raises(RuntimeError), permit(circuits, "x"):
        raise RuntimeError("a malformed answer that is not a ProviderError")
    assert circuits.state("x") is CircuitState.OPEN  # not half-open with a trial forever in flight
    clock.now += 30
    assert permit(circuits, "x").trial  # a new trial goes out after the next cool-down


def test_a_trial_abandoned_without_a_verdict_lets_the_next_call_try() -> None:
    clock = Clock()
    circuits = breaker(clock)
    open_circuit(circuits, "x")
    clock.now += 30
    with permit(circuits, "x"):
        pass  # e.g. cancelled, or the lease was lost before the call went out
    assert circuits.state("x") is CircuitState.HALF_OPEN
    assert permit(circuits, "x").trial


def test_a_cancelled_trial_gives_the_trial_back() -> None:
    import asyncio

    clock = Clock()
    circuits = breaker(clock)
    open_circuit(circuits, "x")
    clock.now += 30
    with pytest.raises(asyncio.CancelledError), permit(circuits, "x"):
        raise asyncio.CancelledError
    assert permit(circuits, "x").trial


def test_a_call_admitted_before_the_circuit_opened_does_not_settle_the_trial() -> None:
    clock = Clock()
    circuits = breaker(clock)
    slow = permit(circuits, "x")  # went out while closed, answers much later
    open_circuit(circuits, "x")
    clock.now += 30
    trial = permit(circuits, "x")
    with slow:
        slow.succeeded()
    assert circuits.state("x") is CircuitState.HALF_OPEN  # still waiting on the real trial
    assert circuits.admit("x") == 1.0
    with trial:
        trial.succeeded()
    assert circuits.state("x") is CircuitState.CLOSED


def test_a_circuit_open_past_its_cool_down_is_reported_stuck() -> None:
    clock = Clock()
    circuits = breaker(clock)
    open_circuit(circuits, "x")
    clock.now += 30 + 10
    assert circuits.stuck(grace=20) == []
    trial = permit(circuits, "x")  # a trial goes out ... and never settles in time
    clock.now += 15
    assert circuits.stuck(grace=20) == ["x"]
    assert circuits.not_closed_for("x") == 55
    with trial:
        trial.succeeded()
    assert circuits.stuck(grace=20) == []


def test_it_opens_exactly_when_a_recount_of_the_window_says_so() -> None:
    """The failures of the window are counted as calls come and go; a recount of the window
    after every call agrees with it, over a long random run of calls, gaps and openings."""
    import random

    clock = Clock()
    circuits = breaker(clock)
    rng = random.Random(7)
    window: list[tuple[float, bool]] = []  # the reference: every call of the window, recounted
    for _ in range(5000):
        clock.now += rng.choice([0.0, 0.5, 3.0, 20.0, 70.0])
        admitted = circuits.admit("spotify")
        if not isinstance(admitted, Permit):
            window.clear()
            continue
        if admitted.trial:
            admitted.succeeded()
            window.clear()
            continue
        ok = rng.random() < 0.6
        with admitted:
            admitted.succeeded() if ok else admitted.failed()
        window = [(at, succeeded) for at, succeeded in window if at >= clock.now - 60] + [(clock.now, ok)]
        failures = sum(1 for _, succeeded in window if not succeeded)
        should_open = len(window) >= 4 and failures >= 0.5 * len(window)
        assert (circuits.state("spotify") is CircuitState.OPEN) is should_open
        if should_open:
            window.clear()
