"""One log line per outage, not one per poll: a loop that retries every second while the store is
away would otherwise write an error every second for as long as the outage lasts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

# While the failure lasts, it is logged again (with how many were not) at most this often.
REPEAT_SECONDS = 60.0


class OutageLog:
    def __init__(self, logger: logging.Logger, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._log, self._what, self._clock = logger, what, clock
        self._since: float | None = None  # when the failures began
        self._last_logged = 0.0
        self._unlogged = 0

    def failed(self, exc: BaseException) -> None:
        now = self._clock()
        if self._since is None:
            self._since, self._last_logged, self._unlogged = now, now, 0
            self._log.error("notify: %s (%s)", self._what, type(exc).__name__)
        elif now - self._last_logged >= REPEAT_SECONDS:
            self._log.error(
                "notify: %s (%s), for %.0f s now; %d more failures not logged",
                self._what,
                type(exc).__name__,
                now - self._since,
                self._unlogged,
            )
            self._last_logged, self._unlogged = now, 0
        else:
            self._unlogged += 1

    def succeeded(self) -> None:
        if self._since is not None:
            self._log.warning("notify: %s: works again after %.0f s", self._what, self._clock() - self._since)
            self._since = None
