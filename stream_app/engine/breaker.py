"""A circuit breaker per platform: when a provider fails most calls, stop calling it for a
while, then try one call before letting traffic back.

Closed: calls flow, and the outcomes of the last ``window`` seconds are kept. It opens when
at least ``min_calls`` were made in the window and ``failure_ratio`` of them failed (5xx,
network errors, timeouts: the provider's trouble, not one user's grant). Open: no calls for
``cool_down`` seconds. Half-open: one trial call; success closes, failure opens again.
State is per process: each worker judges the providers from its own calls.

``on_change`` is told when an outage begins (closed -> open) and when it ends (half-open ->
closed), from inside the call that changed the circuit: it must return at once. A failed
trial re-opens the circuit without a new report: the outage goes on, and the closing reports
how long it lasted since it began.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType

log = logging.getLogger(__name__)

# How long callers are put off while a half-open trial call is in flight.
_TRIAL_WAIT_SECONDS = 1.0


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class CircuitChange:
    """A platform's circuit opened after being closed (``cool_down``: seconds without calls
    before a trial), or closed again (``open_for``: seconds since it first opened)."""

    platform: str
    state: CircuitState  # OPEN or CLOSED
    cool_down: float | None = None
    open_for: float | None = None


@dataclass
class _Circuit:
    state: CircuitState = CircuitState.CLOSED
    # The latest opening (a failed trial opens it again) and the first one since it was closed.
    opened_at: float = 0.0
    outage_began_at: float = 0.0
    trial_in_flight: bool = False
    # Bumped on every change of state: a call admitted under an older one cannot settle this one.
    generation: int = 0
    calls: deque[tuple[float, bool]] = field(default_factory=deque)
    # How many of ``calls`` failed, kept as they come and go: counting them per call was
    # quadratic (a 60 s window at 500 calls/s holds 30,000).
    failures: int = 0


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_ratio: float,
        min_calls: int,
        window: float,
        cool_down: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitChange], None] = lambda _: None,
    ) -> None:
        self._failure_ratio = failure_ratio
        self._min_calls = min_calls
        self._window = window
        self._cool_down = cool_down
        self._clock = clock
        self._on_change = on_change
        self._circuits: dict[str, _Circuit] = {}

    def state(self, platform: str) -> CircuitState:
        return self._circuit(platform).state

    def states(self) -> dict[str, CircuitState]:
        """Every platform called so far, with its circuit's state."""
        return {platform: circuit.state for platform, circuit in sorted(self._circuits.items())}

    def admit(self, platform: str) -> Permit | float:
        """A permit to call now, or the seconds to put the call off by. The permit is a context
        manager that always settles: a call that leaves it without a verdict (an unexpected
        exception) counts as a failure; one cancelled gives a half-open trial back."""
        circuit = self._circuit(platform)
        now = self._clock()
        if circuit.state is CircuitState.OPEN:
            remaining = circuit.opened_at + self._cool_down - now
            if remaining > 0:
                return remaining
            circuit.state = CircuitState.HALF_OPEN
            circuit.generation += 1
        if circuit.state is CircuitState.HALF_OPEN:
            if circuit.trial_in_flight:
                return _TRIAL_WAIT_SECONDS
            circuit.trial_in_flight = True
            return Permit(self, platform, circuit.generation, trial=True)
        return Permit(self, platform, circuit.generation, trial=False)

    def _settle(self, permit: Permit, ok: bool | None) -> None:
        """``ok`` None: no verdict (the call was abandoned)."""
        circuit = self._circuit(permit.platform)
        if permit.generation != circuit.generation:
            return  # the circuit changed state since this call was admitted: it says nothing now
        now = self._clock()
        if permit.trial:
            circuit.trial_in_flight = False
            if ok is True:
                circuit.state = CircuitState.CLOSED
                circuit.generation += 1
                circuit.calls.clear()
                circuit.failures = 0
                self._report(
                    CircuitChange(permit.platform, CircuitState.CLOSED, open_for=now - circuit.outage_began_at)
                )
            elif ok is False:
                self._open(permit.platform, circuit, now)
            return
        if ok is None or circuit.state is not CircuitState.CLOSED:
            return
        circuit.calls.append((now, ok))
        circuit.failures += not ok
        while circuit.calls and circuit.calls[0][0] < now - self._window:
            _, succeeded = circuit.calls.popleft()
            circuit.failures -= not succeeded
        if len(circuit.calls) >= self._min_calls and circuit.failures >= self._failure_ratio * len(circuit.calls):
            self._open(permit.platform, circuit, now)

    def not_closed_for(self, platform: str) -> float:
        """Seconds since the circuit opened (0 while closed)."""
        circuit = self._circuit(platform)
        return 0.0 if circuit.state is CircuitState.CLOSED else self._clock() - circuit.opened_at

    def stuck(self, grace: float) -> list[str]:
        """Platforms whose circuit is still not closed ``grace`` seconds after its cool-down
        ended: no trial call has settled it, so nothing reaches that provider."""
        return sorted(
            platform
            for platform, circuit in self._circuits.items()
            if circuit.state is not CircuitState.CLOSED and self.not_closed_for(platform) > self._cool_down + grace
        )

    def _open(self, platform: str, circuit: _Circuit, now: float) -> None:
        began = circuit.state is CircuitState.CLOSED  # not a failed trial: a new outage
        circuit.state = CircuitState.OPEN
        circuit.generation += 1
        circuit.opened_at = now
        circuit.calls.clear()
        circuit.failures = 0
        if began:
            circuit.outage_began_at = now
            self._report(CircuitChange(platform, CircuitState.OPEN, cool_down=self._cool_down))

    def _report(self, change: CircuitChange) -> None:
        try:
            self._on_change(change)
        except Exception:  # the circuit has changed; the call that changed it must not fail for a report
            log.exception("Reporting the %s circuit's change to %s failed", change.platform, change.state)

    def _circuit(self, platform: str) -> _Circuit:
        return self._circuits.setdefault(platform, _Circuit())


class Permit:
    """One admitted call. Record its verdict with ``succeeded()`` / ``failed()``; leaving the
    ``with`` block without one settles it anyway."""

    def __init__(self, breaker: CircuitBreaker, platform: str, generation: int, *, trial: bool) -> None:
        self._breaker = breaker
        self.platform = platform
        self.generation = generation
        self.trial = trial
        self._settled = False

    def succeeded(self) -> None:
        self._settle(ok=True)

    def failed(self) -> None:
        self._settle(ok=False)

    def _settle(self, *, ok: bool | None) -> None:
        if not self._settled:
            self._settled = True
            self._breaker._settle(self, ok)

    def __enter__(self) -> Permit:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if isinstance(error, Exception):
            self._settle(ok=False)  # an unexpected failure of the call is the provider's, until shown otherwise
        else:
            self._settle(ok=None)  # finished without a verdict, or cancelled: no judgement
