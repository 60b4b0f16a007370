"""Whether to refresh a connection now, and why: a pure function of the row and the clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from stream_app.catalog import PlatformSpec
from stream_app.db.models import REFRESHABLE_STATUSES, ConnectionRow, ConnectionStatus


class Action(StrEnum):
    REFRESH = "refresh"
    SKIP = "skip"
    # The token is about to expire and there is nothing to refresh it with.
    REAUTH = "reauth"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


def decide_refresh(
    row: ConnectionRow | None,
    spec: PlatformSpec,
    now: datetime,
    *,
    window_seconds: float,
    forced: bool = False,
) -> Decision:
    """Refresh when the token expires within ``window_seconds`` of ``now`` (naive UTC),
    or always when ``forced`` (a manual refresh); never for dead or unrefreshable rows."""
    if row is None:
        return Decision(Action.SKIP, "not_found")
    if not spec.refreshable:
        return Decision(Action.SKIP, "not_refreshable")
    # A manual refresh may also retry a connection in `error` (e.g. after fixing a client secret).
    retryable = REFRESHABLE_STATUSES + ((ConnectionStatus.ERROR,) if forced else ())
    if row.status not in retryable:
        return Decision(Action.SKIP, f"status_{row.status}")
    expires_at = row.token_expires_at
    due = expires_at is not None and expires_at <= now + timedelta(seconds=window_seconds)
    if row.refresh_token is None:
        return Decision(Action.REAUTH, "missing_refresh_token") if due else Decision(Action.SKIP, "no_refresh_token")
    if forced:
        return Decision(Action.REFRESH, "manual")
    if expires_at is None:
        return Decision(Action.SKIP, "never_expires")
    if not due:
        return Decision(Action.SKIP, "fresh")
    return Decision(Action.REFRESH, "expired" if expires_at <= now else "expiring")
