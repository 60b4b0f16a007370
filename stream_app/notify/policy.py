"""Policies of user-facing channels: quiet hours (a delay, never a drop) and the re-auth rate
limit (at most one needs_reauth notice per connection per interval)."""

from __future__ import annotations

import random
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo


class QuietHours:
    """A daily span of local time, e.g. 22:00-07:00 (over midnight) or 12:00-13:00."""

    def __init__(self, start: time, end: time, zone: str = "UTC") -> None:
        self.start, self.end, self.zone = start, end, ZoneInfo(zone)

    def _quiet(self, clock: time) -> bool:
        if self.start < self.end:
            return self.start <= clock < self.end
        return clock >= self.start or clock < self.end

    def end_if_quiet(self, now: datetime) -> datetime | None:
        """The end of the quiet span ``now`` falls in (aware, in ``now``'s zone), or None."""
        local = now.astimezone(self.zone)
        if not self._quiet(local.timetz().replace(tzinfo=None)):
            return None
        end = datetime.combine(local.date(), self.end, tzinfo=self.zone)
        if end <= local:
            end += timedelta(days=1)
        return end.astimezone(now.tzinfo)


class DeliveryPolicy:
    """When a delivery of a channel may go out, and whether a re-auth notice is one too many."""

    def __init__(self, quiet_hours: QuietHours | None, reauth_interval_hours: float) -> None:
        self.quiet_hours = quiet_hours
        self.reauth_interval = timedelta(hours=reauth_interval_hours)

    def not_before(self, moment: datetime, *, user_facing: bool) -> datetime:
        """``moment``, or the end of the quiet hours it falls in for a user-facing channel."""
        if not user_facing or self.quiet_hours is None:
            return moment
        return self.quiet_hours.end_if_quiet(moment) or moment


def full_jitter_backoff(attempts: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds before the next try after ``attempts`` failed ones (1 or more): uniform between
    0 and min(cap, base x 2^(attempts-1)) ("full jitter": retries of many deliveries spread out
    rather than arrive together)."""
    ceiling = min(cap, base * 2 ** min(max(attempts - 1, 0), 62))
    return (rng or _random).uniform(0, ceiling)


_random = random.Random()  # noqa: S311 - spreading retries, not a secret
