"""A circuit breaker per platform: when a provider fails most calls, stop calling it for a
while, then try one call before letting traffic back.

Closed: calls flow, and the outcomes of the last ``window`` seconds are kept. It opens when
at least ``min_calls`` were made in the window and ``failure_ratio`` of them failed (5xx,
network errors, timeouts: the provider's trouble, not one user's grant). Open: no calls for
``cool_down`` seconds. Half-open: one trial call; success closes, failure opens again.
State is per process: each worker judges the providers from its own calls.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

# How long callers are put off while a half-open trial call is in flight.
_TRIAL_WAIT_SECONDS = 1.0


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class _Circuit:
    state: CircuitState = CircuitState.CLOSED
    opened_at: float = 0.0
    trial_in_flight: bool = False
    calls: deque[tuple[float, bool]] = field(default_factory=deque)


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_ratio: float,
        min_calls: int,
        window: float,
        cool_down: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._failure_ratio = failure_ratio
        self._min_calls = min_calls
        self._window = window
        self._cool_down = cool_down
        self._clock = clock
        self._circuits: dict[str, _Circuit] = {}

    def state(self, platform: str) -> CircuitState:
        return self._circuit(platform).state

    def before_call(self, platform: str) -> float | None:
        """None when a call may go out now; otherwise the seconds to put it off by."""
        circuit = self._circuit(platform)
        now = self._clock()
        if circuit.state is CircuitState.OPEN:
            remaining = circuit.opened_at + self._cool_down - now
            if remaining > 0:
                return remaining
            circuit.state = CircuitState.HALF_OPEN
        if circuit.state is CircuitState.HALF_OPEN:
            if circuit.trial_in_flight:
                return _TRIAL_WAIT_SECONDS
            circuit.trial_in_flight = True
        return None

    def record(self, platform: str, *, ok: bool) -> None:
        circuit = self._circuit(platform)
        now = self._clock()
        if circuit.state is CircuitState.HALF_OPEN:
            circuit.trial_in_flight = False
            if ok:
                circuit.state = CircuitState.CLOSED
                circuit.calls.clear()
            else:
                self._open(circuit, now)
            return
        circuit.calls.append((now, ok))
        while circuit.calls and circuit.calls[0][0] < now - self._window:
            circuit.calls.popleft()
        failures = sum(1 for _, succeeded in circuit.calls if not succeeded)
        if len(circuit.calls) >= self._min_calls and failures >= self._failure_ratio * len(circuit.calls):
            self._open(circuit, now)

    def _open(self, circuit: _Circuit, now: float) -> None:
        circuit.state = CircuitState.OPEN
        circuit.opened_at = now
        circuit.calls.clear()

    def _circuit(self, platform: str) -> _Circuit:
        return self._circuits.setdefault(platform, _Circuit())
