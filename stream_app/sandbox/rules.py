"""Fault rules: faults drawn at random, during a time window, instead of queued one by one.

A rule answers a share (``probability``) of a platform's token requests with its fault
while it is active (from ``starts_at`` until ``ends_at``, or until ended). Background noise
is a few rules with small probabilities on every platform (``"*"``); an outage is one rule
with probability 1 on one platform for a minute. Ended rules are kept: they are the ground
truth of when each platform was unhealthy.

Several active rules for one request share one draw, newest rule first: rules of 0.2, 0.05
and 0.02 fail 20 %, 5 % and 2 % of requests, and a newer rule of probability 1 takes every
request while it lasts. Not locked here: :class:`~stream_app.sandbox.state.SandboxState`
calls these under its lock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .dialects import GOOGLE, PLATFORMS

if TYPE_CHECKING:
    from .state import Fault

ANY_PLATFORM = "*"


@dataclass
class FaultRule:
    rule_id: int
    platform: str  # a platform key, "google" (the three Google platforms) or "*"
    fault: Fault  # its count is ignored
    probability: float
    starts_at: float
    ends_at: float | None
    hits: int = 0

    def active(self, now: float) -> bool:
        return self.starts_at <= now and (self.ends_at is None or now < self.ends_at)

    def matches(self, platform: str) -> bool:
        if self.platform in (ANY_PLATFORM, platform):
            return True
        spec = PLATFORMS.get(platform)
        return self.platform == GOOGLE and spec is not None and spec.dialect == GOOGLE

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            **self.fault.describe(),
            "platform": self.platform,
            "probability": self.probability,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "active": self.active(now),
            "hits": self.hits,
        }


def rule_window(spec: dict[str, Any], now: float) -> tuple[float, float, float | None]:
    """(probability, starts_at, ends_at) from a rule's ``probability``, ``start_in`` and
    ``duration`` (seconds; no duration: until ended). Raises ValueError when out of range."""
    probability = float(spec.get("probability", 1.0))
    start_in = float(spec.get("start_in", 0.0))
    duration = spec.get("duration")
    if not 0 < probability <= 1:
        raise ValueError("probability must be in (0, 1]")
    if start_in < 0:
        raise ValueError("start_in must be >= 0")
    starts_at = now + start_in
    if duration is None:
        return probability, starts_at, None
    if float(duration) <= 0:
        raise ValueError("duration must be > 0")
    return probability, starts_at, starts_at + float(duration)


class FaultRules:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._rules: list[FaultRule] = []

    def add(self, platform: str, fault: Fault, window: tuple[float, float, float | None]) -> FaultRule:
        probability, starts_at, ends_at = window
        rule = FaultRule(len(self._rules) + 1, platform, fault, probability, starts_at, ends_at)
        self._rules.append(rule)
        return rule

    def draw(self, platform: str, now: float) -> Fault | None:
        """The fault of the rule one uniform draw lands on, or None (the request is served)."""
        candidates = [r for r in reversed(self._rules) if r.active(now) and r.matches(platform)]
        if not candidates:
            return None
        point, reach = self._rng.random(), 0.0
        for rule in candidates:
            reach += rule.probability
            if point < reach:
                rule.hits += 1
                return replace(rule.fault, count=1)
        return None

    def end_all(self, now: float) -> None:
        """End every rule now (kept as history); rules not started yet never start."""
        for rule in self._rules:
            if rule.ends_at is None or rule.ends_at > now:
                rule.ends_at = max(now, rule.starts_at)

    def describe(self, now: float) -> list[dict[str, Any]]:
        return [rule.describe(now) for rule in self._rules]
