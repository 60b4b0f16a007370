"""What stands between the engine and a provider: a cap on calls in flight, a pause when the
provider limits the whole application, and the circuit breaker."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from stream_app.engine.breaker import CircuitBreaker, CircuitChange, CircuitState
from stream_app.settings import Settings
from stream_app.slots import Slots

# How long a platform's calls wait, and look again, while its probe after a pause is out.
_PROBE_WAIT_SECONDS = 1.0


class PlatformGates:
    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        *,
        on_circuit_change: Callable[[CircuitChange], None] = lambda _: None,
    ) -> None:
        self._max_concurrency = settings.platform_max_concurrency
        self._max_inline_wait = settings.rate_limit_max_inline_wait_seconds
        self._clock = clock
        self._slots: dict[str, Slots] = {}
        self._paused_until: dict[str, float] = {}
        # Platforms paused since their last answer, and those whose first call after the pause
        # (the probe) is out: the rest of the platform's calls wait for the probe's answer.
        self._unproven: set[str] = set()
        self._probing: set[str] = set()
        self._sleeping: dict[str, int] = {}
        # When each platform's throttle began: its first pause since a call it accepted.
        self._throttled_since: dict[str, float] = {}
        self.breaker = CircuitBreaker(
            failure_ratio=settings.circuit_failure_ratio,
            min_calls=settings.circuit_min_calls,
            window=settings.circuit_window_seconds,
            cool_down=settings.circuit_cool_down_seconds,
            clock=clock,
            on_change=on_circuit_change,
        )

    def slot(self, platform: str) -> Slots:
        """Held for the duration of one call, never during a wait."""
        slot = self._slots.get(platform)
        if slot is None:
            slot = self._slots[platform] = Slots(self._max_concurrency)
        return slot

    def pause(self, platform: str, seconds: float) -> None:
        """The provider limits the whole application: nobody calls it for ``seconds``, then one
        call (the probe) goes first."""
        until = self._clock() + seconds
        self._paused_until[platform] = max(until, self._paused_until.get(platform, 0.0))
        self._unproven.add(platform)
        self._throttled_since.setdefault(platform, self._clock())

    def throttled_for(self, platform: str) -> float:
        """How long the platform has been throttling the application: since its first pause
        that no accepted call has ended yet (0 when it takes calls)."""
        since = self._throttled_since.get(platform)
        return 0.0 if since is None else self._clock() - since

    def paused_for(self, platform: str) -> float:
        """How long the platform's calls must wait: its pause, or while its probe is out a short
        wait for the probe's answer."""
        remaining = self._paused_until.get(platform, 0.0) - self._clock()
        if remaining > 0:
            return remaining
        return _PROBE_WAIT_SECONDS if platform in self._probing else 0.0

    def may_call(self, platform: str) -> bool:
        """Right before a call, holding the platform's slot: whether it may go now. The first
        call after a pause becomes the probe; report how it ended with ``called``."""
        if self.paused_for(platform) > 0:
            return False
        if platform in self._unproven:
            self._probing.add(platform)
        return True

    def called(self, platform: str, *, paused_again: bool | None) -> None:
        """A call allowed by ``may_call`` ended: it paused the platform again, it did not (the
        provider takes calls: everyone may call), or None when it ended without an answer."""
        self._probing.discard(platform)
        if paused_again is False:
            self._unproven.discard(platform)
            self._throttled_since.pop(platform, None)

    @contextlib.contextmanager
    def inline_wait(self, platform: str) -> Iterator[bool]:
        """Whether one more refresh may sleep through a wait of this platform in memory, counted
        while inside. At most PLATFORM_MAX_CONCURRENCY at once: no more could call when the wait
        ends, and each keeps a dispatcher slot (and its partition's acks) while it sleeps. None
        once the throttle has outlasted RATE_LIMIT_MAX_INLINE_WAIT_SECONDS: a throttle renewed in
        short steps would otherwise keep a relay of sleepers, and the acks behind them, waiting
        for as long as it lasts."""
        sleeping = self._sleeping.get(platform, 0)
        if sleeping >= self._max_concurrency or self.throttled_for(platform) > self._max_inline_wait:
            yield False
            return
        self._sleeping[platform] = sleeping + 1
        try:
            yield True
        finally:
            self._sleeping[platform] -= 1

    def circuit_state(self, platform: str) -> CircuitState:
        return self.breaker.state(platform)
