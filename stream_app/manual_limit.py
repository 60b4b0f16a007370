"""At most one schedule-skipping refresh request from the topic per connection and interval.

A `token.expiring` read from the topic with reason ``manual`` refreshes whatever the expiry,
and ``manual`` and ``on_demand`` both skip a backoff hold: anyone who can write the topic could
otherwise make the service call a provider without end. One such request per connection is
honoured every MANUAL_REFRESH_MIN_INTERVAL_SECONDS (per worker: a connection's requests share
its key's partition, so one worker reads them); the others are downgraded to ``scheduled``,
which refreshes only a due token and respects holds. The CLI's and the Python API's own
refreshes do not come through here.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable

LIMITED_REASONS = frozenset({"manual", "on_demand"})
# Connections remembered at most; when all of them were honoured within the interval, a request
# for another connection is downgraded too (memory stays bounded whatever the topic holds).
MAX_REMEMBERED = 100_000


class ManualRefreshLimit:
    def __init__(
        self,
        interval_seconds: float,
        max_remembered: int = MAX_REMEMBERED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval_seconds
        self._max = max_remembered
        self._clock = clock
        # Connection -> when its last request was honoured; oldest first.
        self._honoured: OrderedDict[tuple[uuid.UUID, str], float] = OrderedDict()

    def allow(self, user_id: uuid.UUID, platform: str) -> bool:
        """Whether a schedule-skipping request for this connection may be honoured now (and
        if so, the interval starts again)."""
        now = self._clock()
        honoured = self._honoured
        while honoured:  # forget what the interval has passed
            oldest = next(iter(honoured.values()))
            if now - oldest < self._interval:
                break
            honoured.popitem(last=False)
        key = (user_id, platform)
        if key in honoured or len(honoured) >= self._max:
            return False
        honoured[key] = now
        return True
