"""Retry delays (contract §6): 1 s, 2 s, 4 s, each plus 0-30 % jitter, capped at 30 s."""

from __future__ import annotations

import random

import pytest

from stream_app import backoff as backoff_module
from stream_app.backoff import Backoff
from stream_app.settings import load_settings

# failed attempt -> the delay range of the contract's defaults
DEFAULT_RANGES = {1: (1.0, 1.3), 2: (2.0, 2.6), 3: (4.0, 5.2)}


@pytest.fixture
def default_backoff(monkeypatch: pytest.MonkeyPatch, encryption_key: str) -> Backoff:
    for name in (
        "RETRY_BASE_DELAY_SECONDS",
        "RETRY_MAX_DELAY_SECONDS",
        "RETRY_JITTER_RATIO",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ENCRYPTION_KEY", encryption_key)
    return Backoff.from_settings(load_settings())


class FixedUniform:
    """An rng whose ``uniform`` always picks one end of its range, and records what it was asked."""

    def __init__(self, end: str) -> None:
        self.end = end
        self.calls: list[tuple[float, float]] = []

    def uniform(self, low: float, high: float) -> float:
        self.calls.append((low, high))
        return low if self.end == "min" else high


def test_defaults_come_from_settings(default_backoff: Backoff) -> None:
    assert default_backoff == Backoff(base=1, cap=30, jitter_ratio=0.3)


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize(("attempt", "bounds"), DEFAULT_RANGES.items())
def test_seeded_delays_fall_in_the_contract_ranges(
    default_backoff: Backoff, seed: int, attempt: int, bounds: tuple[float, float]
) -> None:
    low, high = bounds

    assert low <= default_backoff.delay(attempt, random.Random(seed)) <= high


def test_seeded_delays_are_reproducible_and_jittered(default_backoff: Backoff) -> None:
    first = [default_backoff.delay(1, random.Random(seed)) for seed in range(50)]
    again = [default_backoff.delay(1, random.Random(seed)) for seed in range(50)]

    assert first == again
    assert len(set(first)) > 40  # jitter spreads the retries of many connections
    assert min(first) < 1.1 and max(first) > 1.2


@pytest.mark.parametrize(("attempt", "bounds"), DEFAULT_RANGES.items())
@pytest.mark.parametrize("end", ["min", "max"])
def test_range_ends_with_module_random(
    monkeypatch: pytest.MonkeyPatch,
    default_backoff: Backoff,
    attempt: int,
    bounds: tuple[float, float],
    end: str,
) -> None:
    """Without an rng the module-level ``random.uniform`` draws the jitter."""
    fixed = FixedUniform(end)
    monkeypatch.setattr(backoff_module.random, "uniform", fixed.uniform)

    delay = default_backoff.delay(attempt)

    assert delay == pytest.approx(bounds[0] if end == "min" else bounds[1])
    assert fixed.calls == [(0, 0.3)]


@pytest.mark.parametrize(("attempt", "bounds"), DEFAULT_RANGES.items())
@pytest.mark.parametrize("end", ["min", "max"])
def test_range_ends_with_a_given_rng(
    default_backoff: Backoff, attempt: int, bounds: tuple[float, float], end: str
) -> None:
    delay = default_backoff.delay(attempt, FixedUniform(end))  # type: ignore[arg-type]

    assert delay == pytest.approx(bounds[0] if end == "min" else bounds[1])


@pytest.mark.parametrize("end", ["min", "max"])
@pytest.mark.parametrize("attempt", [6, 10, 64])
def test_cap_applies(default_backoff: Backoff, attempt: int, end: str) -> None:
    assert default_backoff.delay(attempt, FixedUniform(end)) == 30  # type: ignore[arg-type]


def test_cap_applies_after_the_jitter() -> None:
    """16 s plus 30 % would be 20.8 s; a 20 s cap still holds."""
    capped = Backoff(base=1, cap=20, jitter_ratio=0.3)

    assert capped.delay(5, FixedUniform("max")) == 20  # type: ignore[arg-type]
    assert capped.delay(5, FixedUniform("min")) == 16  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(5))
def test_zero_jitter_gives_exact_powers_of_two(seed: int) -> None:
    exact = Backoff(base=1, cap=30, jitter_ratio=0)

    assert [exact.delay(n, random.Random(seed)) for n in range(1, 7)] == [
        1,
        2,
        4,
        8,
        16,
        30,
    ]


def test_base_scales_every_delay() -> None:
    scaled = Backoff(base=0.25, cap=30, jitter_ratio=0)

    assert [scaled.delay(n) for n in (1, 2, 3)] == [0.25, 0.5, 1.0]
