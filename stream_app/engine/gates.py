"""What stands between the engine and a provider: a cap on calls in flight, a pause when the
provider limits the whole application, and the circuit breaker."""

from __future__ import annotations

import time
from collections.abc import Callable

from stream_app.engine.breaker import CircuitBreaker, CircuitState
from stream_app.settings import Settings
from stream_app.slots import Slots


class PlatformGates:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_concurrency = settings.platform_max_concurrency
        self._clock = clock
        self._slots: dict[str, Slots] = {}
        self._paused_until: dict[str, float] = {}
        self.breaker = CircuitBreaker(
            failure_ratio=settings.circuit_failure_ratio,
            min_calls=settings.circuit_min_calls,
            window=settings.circuit_window_seconds,
            cool_down=settings.circuit_cool_down_seconds,
            clock=clock,
        )

    def slot(self, platform: str) -> Slots:
        """Held for the duration of one call, never during a wait."""
        slot = self._slots.get(platform)
        if slot is None:
            slot = self._slots[platform] = Slots(self._max_concurrency)
        return slot

    def pause(self, platform: str, seconds: float) -> None:
        """The provider limits the whole application: nobody calls it for ``seconds``."""
        until = self._clock() + seconds
        self._paused_until[platform] = max(until, self._paused_until.get(platform, 0.0))

    def paused_for(self, platform: str) -> float:
        return max(0.0, self._paused_until.get(platform, 0.0) - self._clock())

    def circuit_state(self, platform: str) -> CircuitState:
        return self.breaker.state(platform)
