"""A throttle renewed in short steps: refreshes sleep through its first waits, not all of it."""

from __future__ import annotations

import pytest

from stream_app.engine.gates import PlatformGates
from stream_app.settings import load_settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gates(monkeypatch: pytest.MonkeyPatch, encryption_key: str, clock: Clock) -> PlatformGates:
    monkeypatch.setenv("ENCRYPTION_KEY", encryption_key)
    settings = load_settings(rate_limit_max_inline_wait_seconds=5, platform_max_concurrency=3)
    return PlatformGates(settings, clock=clock)


def _may_sleep(gates: PlatformGates, platform: str) -> bool:
    with gates.inline_wait(platform) as allowed:
        return allowed


def test_a_throttle_is_timed_from_its_first_pause_until_a_call_is_accepted(gates: PlatformGates, clock: Clock) -> None:
    assert gates.throttled_for("x") == 0
    gates.pause("x", 4)
    clock.now += 4
    assert gates.may_call("x")  # the probe
    gates.called("x", paused_again=True)
    gates.pause("x", 4)  # renewed: the throttle goes on
    clock.now += 3
    assert gates.throttled_for("x") == 7
    assert gates.throttled_for("spotify") == 0

    clock.now += 1
    assert gates.may_call("x")
    gates.called("x", paused_again=False)
    assert gates.throttled_for("x") == 0


def test_refreshes_sleep_through_a_throttle_only_until_it_outlasts_the_inline_budget(
    gates: PlatformGates, clock: Clock
) -> None:
    gates.pause("x", 4)
    assert _may_sleep(gates, "x")
    clock.now += 5
    assert _may_sleep(gates, "x"), "five seconds of throttle are still within the budget"
    clock.now += 0.5
    assert not _may_sleep(gates, "x"), "a throttle longer than the budget is held, not slept"
    assert _may_sleep(gates, "spotify")


def test_no_more_refreshes_sleep_at_once_than_could_call_when_the_wait_ends(gates: PlatformGates) -> None:
    gates.pause("x", 4)
    with gates.inline_wait("x") as first, gates.inline_wait("x") as second, gates.inline_wait("x") as third:
        assert first and second and third
        assert not _may_sleep(gates, "x")
    assert _may_sleep(gates, "x")
