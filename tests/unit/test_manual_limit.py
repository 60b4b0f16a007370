from __future__ import annotations

import uuid

from stream_app.manual_limit import ManualRefreshLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_request_per_connection_and_interval() -> None:
    clock = Clock()
    limit = ManualRefreshLimit(60, clock=clock)
    user, other = uuid.uuid4(), uuid.uuid4()
    assert limit.allow(user, "spotify")
    assert not limit.allow(user, "spotify")
    assert limit.allow(user, "twitch") and limit.allow(other, "spotify")  # per connection
    clock.now += 59.9
    assert not limit.allow(user, "spotify")  # a refused request does not restart the interval ...
    clock.now += 0.1
    assert limit.allow(user, "spotify")  # ... so the next one after it is honoured


def test_memory_is_bounded_and_a_full_table_refuses() -> None:
    clock = Clock()
    limit = ManualRefreshLimit(60, max_remembered=3, clock=clock)
    users = [uuid.uuid4() for _ in range(4)]
    assert all(limit.allow(user, "x") for user in users[:3])
    assert not limit.allow(users[3], "x")  # every remembered one still within its interval
    clock.now += 60
    assert limit.allow(users[3], "x")  # the expired ones were forgotten
    assert len(limit._honoured) == 1
