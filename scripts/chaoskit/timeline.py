"""The schedule of a chaos phase: provider fault rules and infrastructure events.

Offsets are fractions of the chaos phase, so a quick run is the same story compressed.
Provider faults are handed to the sandbox as fault rules with their windows up front; the
sandbox then is the ground truth of when each platform was unhealthy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BACKGROUND = (("server_error", 0.20), ("rate_limit", 0.05), ("timeout", 0.02))
# A pool checkout waits SQLAlchemy's pool_timeout (30 s) before it fails: the lock must outlast it.
POOL_HOLD_SECONDS = 40.0


@dataclass(frozen=True)
class Plan:
    phase_seconds: float
    down_platform: str
    down_at: float
    down_seconds: float
    throttled_platform: str
    throttle_at: float
    throttle_seconds: float
    throttle_retry_after: float
    http_timeout: float
    events: tuple[tuple[float, str], ...]  # (offset in seconds, event name)

    def fault_rules(self) -> list[dict[str, Any]]:
        background = [
            {
                "platform": "*",
                "mode": mode,
                "probability": probability,
                "retry_after": 1,
                "delay": self.http_timeout + 3,  # longer than the worker waits
                "duration": self.phase_seconds,
            }
            for mode, probability in BACKGROUND
        ]
        down = {
            "platform": self.down_platform,
            "mode": "server_error",
            "status": 503,
            "start_in": self.down_at,
            "duration": self.down_seconds,
        }
        throttle = {
            "platform": self.throttled_platform,
            "mode": "rate_limit",
            "retry_after": self.throttle_retry_after,
            "start_in": self.throttle_at,
            "duration": self.throttle_seconds,
        }
        return [*background, down, throttle]


def make_plan(minutes: float, down_platform: str, throttled_platform: str, http_timeout: float) -> Plan:
    phase = minutes * 60
    full = minutes >= 9  # the numbers; shorter phases compress them
    throttle_seconds = 300.0 if full else max(60.0, phase * 0.4)
    events = (
        (0.12, "kill -9 worker-1"),
        (0.30, "kafka crash-restart"),
        (0.45, "kill -9 worker-2"),
        (0.60, "postgres restart"),
        (0.72, "database pool exhaustion"),
    )
    return Plan(
        phase_seconds=phase,
        down_platform=down_platform,
        down_at=phase * 0.05,
        down_seconds=60.0 if full else max(30.0, phase * 0.15),
        throttled_platform=throttled_platform,
        throttle_at=phase * 0.2,
        throttle_seconds=throttle_seconds,
        throttle_retry_after=120.0 if full else 20.0,
        http_timeout=http_timeout,
        events=tuple((phase * fraction, name) for fraction, name in events),
    )
