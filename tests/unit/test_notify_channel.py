"""How the notifier's HTTP channels read a non-2xx answer and its Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stream_app.notify.channel import http_failure, retry_after_seconds

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("Mon, 30 Nov 2026 12:01:30 GMT", 90.0),
        ("Mon, 30 Nov 2026 11:00:00 GMT", 0.0),  # in the past: now
        # As asked, however long: the dispatcher judges it against the give-up age (dead-lettered past it).
        ("99999999999999999999", 1e20),
        ("Fri, 31 Dec 9999 23:59:59 GMT", 251_606_260_799.0),
        ("\u00b2", None),  # a digit to str.isdigit, not to int()
        ("\u0661\u0662", None),  # Arabic-Indic digits
        ("-5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_read_and_never_raises(header: str | None, expected: float | None) -> None:
    assert retry_after_seconds(header, NOW) == expected


@pytest.mark.parametrize(
    ("status", "permanent", "retry_after"),
    [
        (400, True, None),
        (404, True, None),
        (410, True, None),
        (408, False, None),
        (429, False, 30.0),
        (500, False, None),
        (503, False, 30.0),
    ],
)
def test_http_failures_are_permanent_only_for_4xx_other_than_408_and_429(
    status: int, permanent: bool, retry_after: float | None
) -> None:
    failure = http_failure("the endpoint", status, {"retry-after": "30"}, NOW)
    assert (failure.permanent, failure.retry_after) == (permanent, retry_after)
    assert failure.reason == f"the endpoint answered HTTP {status}"
