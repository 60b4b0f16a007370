"""Retry delays: exponential backoff with jitter, capped."""

from __future__ import annotations

import random
from dataclasses import dataclass

from stream_app.settings import Settings


@dataclass(frozen=True)
class Backoff:
    base: float
    cap: float
    jitter_ratio: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Backoff:
        return cls(
            settings.retry_base_delay_seconds,
            settings.retry_max_delay_seconds,
            settings.retry_jitter_ratio,
        )

    def delay(self, failed_attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``failed_attempts``-th failure: base·2^(n-1) plus
        0..jitter_ratio of itself, never more than the cap (1-1.3 s, 2-2.6 s, 4-5.2 s ...)."""
        exponential = self.base * 2.0 ** (failed_attempts - 1)
        jitter: float = (rng or random).uniform(0, self.jitter_ratio)
        return min(self.cap, exponential * (1 + jitter))
