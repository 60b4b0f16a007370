"""`decide_refresh`: whether a connection is refreshed now, skipped, or sent to re-authentication."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from stream_app.catalog import platform
from stream_app.db.models import ConnectionRow, ConnectionStatus
from stream_app.decisions import Action, Decision, decide_refresh

NOW = datetime(2025, 3, 1, 12, 0, 0)  # naive UTC, as the database stores it
WINDOW = 300.0
ENCRYPTED = "000000000000000000000001:" + "ab" * 16 + ":cdcd"
KEEP = object()  # "leave the default"


def row(
    *,
    platform_key: str = "spotify",
    status: str = "connected",
    refresh_token: object = KEEP,
    expires_in: timedelta | None = timedelta(hours=1),
) -> ConnectionRow:
    """A transient row (never added to a session), as the repository would load it."""
    return ConnectionRow(
        user_id=uuid.UUID(int=1),
        platform=platform_key,
        access_token=ENCRYPTED,
        refresh_token=ENCRYPTED if refresh_token is KEEP else refresh_token,
        token_expires_at=None if expires_in is None else NOW + expires_in,
        status=status,
    )


@dataclass(frozen=True)
class Case:
    id: str
    row: ConnectionRow | None
    expected: Decision
    platform_key: str = "spotify"
    forced: bool = False


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
    decision = decide_refresh(
        case.row,
        platform(case.platform_key),
        NOW,
        window_seconds=WINDOW,
        forced=case.forced,
    )

    assert decision == case.expected


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (99.0, Decision(Action.SKIP, "fresh")),
        (100.0, Decision(Action.REFRESH, "expiring")),
        (360.0, Decision(Action.REFRESH, "expiring")),
    ],
)
def test_window_is_the_argument_not_a_constant(window: float, expected: Decision) -> None:
    decision = decide_refresh(row(expires_in=SOON), platform("spotify"), NOW, window_seconds=window)

    assert decision == expected


def test_status_as_enum_or_text_decides_alike() -> None:
    as_text = decide_refresh(row(status="needs_reauth"), platform("spotify"), NOW, window_seconds=WINDOW)
    as_enum = decide_refresh(
        row(status=ConnectionStatus.NEEDS_REAUTH),
        platform("spotify"),
        NOW,
        window_seconds=WINDOW,
    )

    assert as_text == as_enum == Decision(Action.SKIP, "status_needs_reauth")


def test_decision_does_not_touch_the_row() -> None:
    subject = row(expires_in=PAST)
    before = (
        subject.status,
        subject.refresh_token,
        subject.token_expires_at,
        subject.access_token,
    )

    decide_refresh(subject, platform("spotify"), NOW, window_seconds=WINDOW, forced=True)

    assert (
        subject.status,
        subject.refresh_token,
        subject.token_expires_at,
        subject.access_token,
    ) == before
