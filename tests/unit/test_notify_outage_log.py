"""A store away for minutes is one error line, a reminder a minute, and one line when it is back;
not an error per poll."""

from __future__ import annotations

import logging

import pytest

from stream_app.notify.outage_log import REPEAT_SECONDS, OutageLog


def test_an_outage_is_logged_once_then_reminded_then_closed(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    trouble = OutageLog(logging.getLogger("test.outage"), "email: due deliveries could not be claimed", lambda: now[0])
    caplog.set_level(logging.INFO, "test.outage")
    for _ in range(90):  # a poll a second for 90 s
        trouble.failed(ConnectionRefusedError())
        now[0] += 1
    trouble.succeeded()
    trouble.succeeded()  # nothing to report twice
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "notify: email: due deliveries could not be claimed (ConnectionRefusedError)",
        f"notify: email: due deliveries could not be claimed (ConnectionRefusedError), for {REPEAT_SECONDS:.0f} s now; "
        "59 more failures not logged",
        "notify: email: due deliveries could not be claimed: works again after 90 s",
    ]
    trouble.failed(TimeoutError())  # a new outage is logged at once
    assert caplog.records[-1].getMessage() == "notify: email: due deliveries could not be claimed (TimeoutError)"
