"""`decide_refresh`: whether a connection is refreshed now, skipped, or sent to re-authentication."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import RefreshReason
from stream_app.catalog import platform
from stream_app.db.models import ConnectionRow, ConnectionStatus
from stream_app.decisions import Action, Decision, RefreshPolicy, decide_refresh

NOW = datetime(2025, 3, 1, 12, 0, 0)  # naive UTC, as the database stores it
POLICY = RefreshPolicy()  # the seed's numbers: 300 s buffer, 60 s scan interval
WINDOW = POLICY.buffer_seconds  # an on-demand caller refreshes what expires within the buffer
ENCRYPTED = "000000000000000000000001:" + "ab" * 16 + ":cdcd"
KEEP = object()  # "leave the default"


def row(
    *,
    platform_key: str = "spotify",
    status: str = "connected",
    refresh_token: object = KEEP,
    expires_in: timedelta | None = timedelta(hours=1),
    lifetime: int | None = None,
    refresh_due_at: datetime | None = None,
    refresh_not_before: datetime | None = None,
) -> ConnectionRow:
    """A transient row (never added to a session), as the repository would load it."""
    return ConnectionRow(
        user_id=uuid.UUID(int=1),
        platform=platform_key,
        access_token=ENCRYPTED,
        refresh_token=ENCRYPTED if refresh_token is KEEP else refresh_token,
        token_expires_at=None if expires_in is None else NOW + expires_in,
        token_lifetime_seconds=lifetime,
        refresh_due_at=refresh_due_at,
        refresh_not_before=refresh_not_before,
        status=status,
    )


@dataclass(frozen=True)
class Case:
    id: str
    row: ConnectionRow | None
    expected: Decision
    platform_key: str = "spotify"
    forced: bool = False

    @property
    def trigger(self) -> RefreshReason:
        return "manual" if self.forced else "on_demand"


SOON = timedelta(seconds=100)
LATER = timedelta(hours=1)
PAST = timedelta(seconds=-1)
EDGE = timedelta(seconds=WINDOW)
JUST_PAST_EDGE = timedelta(seconds=WINDOW, microseconds=1)
NON_REFRESHABLE = [s for s in ConnectionStatus if s not in (ConnectionStatus.CONNECTED, ConnectionStatus.TOKEN_EXPIRED)]

CASES = [
    Case("row-none", None, Decision(Action.SKIP, "not_found")),
    Case("row-none-forced", None, Decision(Action.SKIP, "not_found"), forced=True),
    Case(
        "github-not-refreshable",
        row(platform_key="github", refresh_token=None, expires_in=None),
        Decision(Action.SKIP, "not_refreshable"),
        platform_key="github",
    ),
    Case(
        "github-forced-with-expiry",
        row(platform_key="github", refresh_token=None, expires_in=PAST),
        Decision(Action.SKIP, "not_refreshable"),
        platform_key="github",
        forced=True,
    ),
    *(
        Case(
            f"status-{status}-expired",
            row(status=status, expires_in=PAST),
            Decision(Action.SKIP, f"status_{status}"),
        )
        for status in NON_REFRESHABLE
    ),
    *(
        Case(
            f"status-{status}-forced",
            row(status=status),
            Decision(Action.SKIP, f"status_{status}"),
            forced=True,
        )
        for status in NON_REFRESHABLE
        if status != "error"
    ),
    # After an operator fixes a client secret, a manual refresh can bring an `error` row back.
    Case("status-error-forced", row(status="error"), Decision(Action.REFRESH, "manual"), forced=True),
    Case(
        "token-expired-status-refreshes",
        row(status="token_expired", expires_in=PAST),
        Decision(Action.REFRESH, "expired"),
    ),
    Case(
        "no-refresh-token-due",
        row(refresh_token=None, expires_in=SOON),
        Decision(Action.REAUTH, "missing_refresh_token"),
    ),
    Case(
        "no-refresh-token-expired",
        row(refresh_token=None, expires_in=PAST),
        Decision(Action.REAUTH, "missing_refresh_token"),
    ),
    Case(
        "no-refresh-token-not-due",
        row(refresh_token=None, expires_in=LATER),
        Decision(Action.SKIP, "no_refresh_token"),
    ),
    Case(
        "no-refresh-token-never-expires",
        row(refresh_token=None, expires_in=None),
        Decision(Action.SKIP, "no_refresh_token"),
    ),
    Case(
        "no-refresh-token-forced-fresh",
        row(refresh_token=None, expires_in=LATER),
        Decision(Action.SKIP, "no_refresh_token"),
        forced=True,
    ),
    Case(
        "forced-fresh",
        row(expires_in=LATER),
        Decision(Action.REFRESH, "manual"),
        forced=True,
    ),
    Case(
        "forced-never-expires",
        row(expires_in=None),
        Decision(Action.REFRESH, "manual"),
        forced=True,
    ),
    Case(
        "forced-expired",
        row(expires_in=PAST),
        Decision(Action.REFRESH, "manual"),
        forced=True,
    ),
    Case("never-expires", row(expires_in=None), Decision(Action.SKIP, "never_expires")),
    Case("fresh", row(expires_in=LATER), Decision(Action.SKIP, "fresh")),
    Case(
        "expiring-within-window",
        row(expires_in=SOON),
        Decision(Action.REFRESH, "expiring"),
    ),
    Case("already-expired", row(expires_in=PAST), Decision(Action.REFRESH, "expired")),
    Case(
        "expires-exactly-now",
        row(expires_in=timedelta(0)),
        Decision(Action.REFRESH, "expired"),
    ),
    Case(
        "expired-long-ago",
        row(expires_in=-timedelta(days=30)),
        Decision(Action.REFRESH, "expired"),
    ),
    Case(
        "exactly-at-window-edge",
        row(expires_in=EDGE),
        Decision(Action.REFRESH, "expiring"),
    ),
    Case(
        "just-past-window-edge",
        row(expires_in=JUST_PAST_EDGE),
        Decision(Action.SKIP, "fresh"),
    ),
    Case(
        "google-platform-expiring",
        row(platform_key="gmail", expires_in=SOON),
        Decision(Action.REFRESH, "expiring"),
        platform_key="gmail",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_decide_refresh(case: Case) -> None:
    assert decide_refresh(case.row, platform(case.platform_key), NOW, POLICY, case.trigger) == case.expected


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        ("on_demand", Decision(Action.SKIP, "fresh")),
        ("scheduled", Decision(Action.REFRESH, "expiring")),
        ("bulk", Decision(Action.REFRESH, "expiring")),
    ],
)
def test_the_scan_looks_one_interval_further_than_an_on_demand_caller(
    trigger: RefreshReason, expected: Decision
) -> None:
    # Due at 330 s before expiry: inside buffer + interval (360 s), outside the buffer (300 s).
    assert decide_refresh(row(expires_in=timedelta(seconds=330)), platform("spotify"), NOW, POLICY, trigger) == expected


@pytest.mark.parametrize(
    ("expires_in", "expected"),
    [
        (timedelta(seconds=31), Decision(Action.SKIP, "fresh")),
        (timedelta(seconds=30), Decision(Action.REFRESH, "expiring")),
    ],
)
def test_the_buffer_is_at_most_half_a_short_tokens_lifetime(expires_in: timedelta, expected: Decision) -> None:
    short = row(expires_in=expires_in, lifetime=60)  # a 60 s token: buffer 30 s, not 300 s
    assert decide_refresh(short, platform("spotify"), NOW, POLICY, "on_demand") == expected


def test_a_connection_backing_off_is_left_to_its_retry_time_except_by_callers() -> None:
    hold = NOW + timedelta(minutes=10)
    failing = row(expires_in=timedelta(seconds=100), refresh_due_at=hold, refresh_not_before=hold)
    spotify = platform("spotify")
    assert decide_refresh(failing, spotify, NOW, POLICY, "scheduled") == Decision(Action.SKIP, "backing_off")
    assert decide_refresh(failing, spotify, NOW, POLICY, "bulk") == Decision(Action.SKIP, "backing_off")
    assert decide_refresh(failing, spotify, NOW, POLICY, "on_demand") == Decision(Action.REFRESH, "expiring")
    assert decide_refresh(failing, spotify, NOW, POLICY, "manual") == Decision(Action.REFRESH, "manual")


def test_a_hold_of_one_scan_interval_still_stops_a_queued_duplicate() -> None:
    """After one failure the next attempt is one backoff base (60 s, as long as the scan's
    look-ahead) away: a duplicate request already queued must not refresh again at once."""
    retry_at = POLICY.retry_at(NOW, 1)
    assert retry_at == NOW + timedelta(seconds=POLICY.scan_interval_seconds)
    failing = row(expires_in=timedelta(seconds=100), refresh_due_at=retry_at, refresh_not_before=retry_at)
    assert decide_refresh(failing, platform("spotify"), NOW, POLICY, "scheduled") == Decision(
        Action.SKIP, "backing_off"
    )
    later = retry_at + timedelta(seconds=1)
    assert decide_refresh(failing, platform("spotify"), later, POLICY, "scheduled").action is Action.REFRESH


@pytest.mark.parametrize(("lifetime", "buffer"), [(None, 300), (3600, 300), (600, 300), (60, 30), (0, 300)])
def test_buffer_for(lifetime: int | None, buffer: float) -> None:
    assert POLICY.buffer_for(lifetime) == buffer


@pytest.mark.parametrize(("failures", "delay"), [(1, 60), (2, 120), (3, 240), (6, 1920), (7, 3600), (50, 3600)])
def test_failed_refreshes_back_off_exponentially_up_to_an_hour(failures: int, delay: int) -> None:
    assert POLICY.retry_at(NOW, failures) == NOW + timedelta(seconds=delay)


def test_refresh_time_of_a_token_that_never_expires_is_none() -> None:
    assert POLICY.refresh_at(None, 3600) is None
    assert POLICY.refresh_at(NOW, None) == NOW - timedelta(seconds=300)


@settings(max_examples=500, deadline=None)
@given(
    expires_in=st.floats(min_value=1, max_value=48 * 3600),
    lifetime=st.one_of(st.none(), st.integers(min_value=1, max_value=48 * 3600)),
    interval=st.floats(min_value=1, max_value=600),
    phase=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_no_token_expires_between_two_scans_unrequested(
    expires_in: float, lifetime: int | None, interval: float, phase: float
) -> None:
    """Scans at phase, phase + interval, ... request what is due within one interval: the
    first scan that requests a token runs no later than its refresh time, i.e. at least the
    (lifetime-capped) buffer before it expires, wherever the scans fall."""
    policy = RefreshPolicy(scan_interval_seconds=interval)
    step = timedelta(seconds=interval)
    expires_at = NOW + timedelta(seconds=expires_in)
    refresh_at = policy.refresh_at(expires_at, lifetime)
    assert refresh_at is not None
    first = scan = NOW + phase * step
    while refresh_at > scan + step:  # the scheduler's query: due within one interval
        scan += step
    if scan > first:  # (a token already due at the first scan is requested by that scan)
        assert scan <= refresh_at
        assert expires_at - scan >= timedelta(seconds=policy.buffer_for(lifetime)) - timedelta(microseconds=1)
