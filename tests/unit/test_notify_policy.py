"""Quiet hours and the retry backoff of the notifier."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time

from stream_app.notify.policy import DeliveryPolicy, QuietHours, full_jitter_backoff


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, 10, hour, minute, tzinfo=UTC)


def test_quiet_hours_over_midnight_end_the_next_morning() -> None:
    quiet = QuietHours(time(22), time(7))
    assert quiet.end_if_quiet(at(21, 59)) is None
    assert quiet.end_if_quiet(at(22)) == datetime(2026, 3, 11, 7, tzinfo=UTC)
    assert quiet.end_if_quiet(at(3)) == at(7)
    assert quiet.end_if_quiet(at(7)) is None


def test_quiet_hours_within_a_day() -> None:
    quiet = QuietHours(time(12), time(13, 30))
    assert quiet.end_if_quiet(at(12, 15)) == at(13, 30)
    assert quiet.end_if_quiet(at(13, 30)) is None and quiet.end_if_quiet(at(11, 59)) is None


def test_quiet_hours_are_read_in_their_time_zone() -> None:
    quiet = QuietHours(time(22), time(7), zone="Europe/Paris")  # UTC+1 in March (before DST)
    assert quiet.end_if_quiet(at(20, 30)) is None  # 21:30 in Paris
    assert quiet.end_if_quiet(at(21, 30)) == datetime(2026, 3, 11, 6, tzinfo=UTC)  # 22:30 Paris -> 07:00 Paris


def test_a_policy_delays_only_user_facing_channels() -> None:
    policy = DeliveryPolicy(QuietHours(time(22), time(7)), reauth_interval_hours=24)
    assert policy.not_before(at(23), user_facing=True) == datetime(2026, 3, 11, 7, tzinfo=UTC)
    assert policy.not_before(at(23), user_facing=False) == at(23)
    assert DeliveryPolicy(None, 24).not_before(at(23), user_facing=True) == at(23)


def test_backoff_is_full_jitter_under_a_ceiling_that_doubles_up_to_the_cap() -> None:
    rng = random.Random(3)
    for attempts, ceiling in ((1, 2.0), (2, 4.0), (3, 8.0), (6, 60.0), (40, 60.0)):
        delays = [full_jitter_backoff(attempts, base=2, cap=60, rng=rng) for _ in range(400)]
        assert all(0 <= delay <= ceiling for delay in delays)
        assert max(delays) > ceiling * 0.9  # it reaches the ceiling ...
        assert min(delays) < ceiling * 0.1  # ... and spreads down to nothing (full jitter)
        assert len({round(delay, 6) for delay in delays}) > 390
