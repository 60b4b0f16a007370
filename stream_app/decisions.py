"""When to refresh a connection, and why: pure functions of the row, the policy and the clock.

A token is refreshed a *buffer* before it expires: REFRESH_BUFFER_SECONDS, but never more
than a fraction of the token's lifetime (a 60-second token with a 5-minute buffer would be
refreshed forever). The scan requests refreshes due within one scan interval, so no token
can come due between two scans unseen. After a failure the next scheduled attempt backs
off exponentially (no refresh storm), as does a provider's long rate limit: both are a hold
on the row (``refresh_not_before``) that scheduled requests respect and on-demand callers do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from schemas import RefreshReason
from stream_app.catalog import PlatformSpec
from stream_app.db.models import REFRESHABLE_STATUSES, ConnectionStatus
from stream_app.settings import Settings


class RefreshState(Protocol):
    """What deciding reads of a connection: a ``ConnectionRow``, or a lighter copy of these."""

    @property
    def status(self) -> str | None: ...
    @property
    def token_expires_at(self) -> datetime | None: ...
    @property
    def token_lifetime_seconds(self) -> int | None: ...
    @property
    def refresh_token(self) -> str | None: ...
    @property
    def refresh_not_before(self) -> datetime | None: ...


class Action(StrEnum):
    REFRESH = "refresh"
    SKIP = "skip"
    # The token is about to expire and there is nothing to refresh it with.
    REAUTH = "reauth"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


@dataclass(frozen=True)
class RefreshPolicy:
    buffer_seconds: float = 300
    max_buffer_fraction: float = 0.5
    scan_interval_seconds: float = 60
    failure_backoff_base_seconds: float = 60
    failure_backoff_max_seconds: float = 3600

    @classmethod
    def from_settings(cls, settings: Settings) -> RefreshPolicy:
        return cls(
            buffer_seconds=settings.refresh_buffer_seconds,
            max_buffer_fraction=settings.refresh_buffer_max_fraction,
            scan_interval_seconds=settings.scan_interval_seconds,
            failure_backoff_base_seconds=settings.failure_backoff_base_seconds,
            failure_backoff_max_seconds=settings.failure_backoff_max_seconds,
        )

    def buffer_for(self, lifetime_seconds: float | None) -> float:
        if lifetime_seconds is None or lifetime_seconds <= 0:
            return self.buffer_seconds
        return min(self.buffer_seconds, lifetime_seconds * self.max_buffer_fraction)

    def refresh_at(self, expires_at: datetime | None, lifetime_seconds: float | None) -> datetime | None:
        """When a token that expires at ``expires_at`` should be refreshed (None: never)."""
        if expires_at is None:
            return None
        try:
            return expires_at - timedelta(seconds=self.buffer_for(lifetime_seconds))
        except OverflowError:  # an expiry near year 1 (a row edited by hand): due since forever
            return datetime.min

    def retry_at(self, now: datetime, consecutive_failures: int) -> datetime:
        """The next scheduled attempt after ``consecutive_failures`` failures in a row: one
        backoff base, then two, four ..., capped (at the defaults, at most 24 tries a day)."""
        exponent = max(0, consecutive_failures - 1)
        delay = min(self.failure_backoff_max_seconds, self.failure_backoff_base_seconds * 2.0**exponent)
        return now + timedelta(seconds=delay)

    def window(self, trigger: RefreshReason) -> float:
        """How far ahead of its refresh time a trigger may refresh a token: the scan's own
        requests look one interval ahead; an on-demand caller refreshes only what is due."""
        return 0.0 if trigger == "on_demand" else self.scan_interval_seconds


def decide_refresh(
    row: RefreshState | None,
    spec: PlatformSpec,
    now: datetime,
    policy: RefreshPolicy,
    trigger: RefreshReason,
) -> Decision:
    """Whether ``trigger`` should refresh ``row`` at ``now`` (naive UTC); a manual trigger
    refreshes whatever the expiry; dead or unrefreshable rows are never refreshed."""
    forced = trigger == "manual"
    if row is None:
        return Decision(Action.SKIP, "not_found")
    if not spec.refreshable:
        return Decision(Action.SKIP, "not_refreshable")
    # A manual refresh may also retry a connection in `error` (e.g. after fixing a client secret).
    retryable = REFRESHABLE_STATUSES + ((ConnectionStatus.ERROR,) if forced else ())
    if row.status not in retryable:
        return Decision(Action.SKIP, f"status_{row.status}")
    horizon = now + timedelta(seconds=policy.window(trigger))
    refresh_at = policy.refresh_at(row.token_expires_at, row.token_lifetime_seconds)
    due = refresh_at is not None and refresh_at <= horizon
    if row.refresh_token is None:
        return Decision(Action.REAUTH, "missing_refresh_token") if due else Decision(Action.SKIP, "no_refresh_token")
    if forced:
        return Decision(Action.REFRESH, "manual")
    if refresh_at is None:
        return Decision(Action.SKIP, "never_expires")
    if not due:
        return Decision(Action.SKIP, "fresh")
    # A hold (failure backoff, a provider's rate limit, an open circuit) stops scheduled requests,
    # duplicates included, until it ends; a caller who needs the token now is not held back.
    held = trigger != "on_demand" and row.refresh_not_before is not None and row.refresh_not_before > now
    if held:
        return Decision(Action.SKIP, "backing_off")
    expires_at = row.token_expires_at
    return Decision(Action.REFRESH, "expired" if expires_at is not None and expires_at <= now else "expiring")
