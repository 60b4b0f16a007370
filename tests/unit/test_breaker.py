"""The per-platform circuit breaker opens on a failing provider, cools down, and tries once."""

from __future__ import annotations

from stream_app.engine.breaker import CircuitBreaker, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(failure_ratio=0.5, min_calls=4, window=60, cool_down=30, clock=clock)


def test_opens_when_most_calls_in_the_window_fail_and_only_for_that_platform() -> None:
    clock = Clock()
    circuits = breaker(clock)
    for ok in (True, False, False):
        assert circuits.before_call("spotify") is None
        circuits.record("spotify", ok=ok)
    assert circuits.state("spotify") is CircuitState.CLOSED  # 3 calls: below min_calls
    circuits.record("spotify", ok=False)
    assert circuits.state("spotify") is CircuitState.OPEN
    assert circuits.before_call("spotify") == 30
    assert circuits.before_call("discord") is None


def test_a_minority_of_failures_or_old_failures_do_not_open_it() -> None:
    clock = Clock()
    circuits = breaker(clock)
    for ok in (False, False, False):
        circuits.record("google", ok=ok)
    clock.now += 61  # those failures leave the window
    for ok in (True, True, True, False):
        circuits.record("google", ok=ok)
    assert circuits.state("google") is CircuitState.CLOSED


def test_after_the_cool_down_one_trial_decides() -> None:
    clock = Clock()
    circuits = breaker(clock)
    for _ in range(4):
        circuits.record("x", ok=False)
    clock.now += 10
    assert circuits.before_call("x") == 20
    clock.now += 20
    assert circuits.before_call("x") is None  # the trial
    assert circuits.state("x") is CircuitState.HALF_OPEN
    assert circuits.before_call("x") == 1.0  # everyone else waits for the trial
    circuits.record("x", ok=False)
    assert circuits.state("x") is CircuitState.OPEN and circuits.before_call("x") == 30
    clock.now += 30
    assert circuits.before_call("x") is None
    circuits.record("x", ok=True)
    assert circuits.state("x") is CircuitState.CLOSED
    assert circuits.before_call("x") is None
