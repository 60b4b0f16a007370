"""The client libraries' log lines that would flood a worker's log are held back."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from stream_app.kafka_client import cap_client_logging


@pytest.fixture
def fresh_conn_logger() -> Iterator[logging.Logger]:
    """aiokafka.conn without the filters an earlier test in this process installed (whose
    'once' may already be spent), restored afterwards."""
    conn = logging.getLogger("aiokafka.conn")
    before = list(conn.filters)
    conn.filters.clear()
    yield conn
    conn.filters[:] = before


def test_aiokafkas_plain_sasl_warning_is_logged_once_not_per_connection(
    caplog: pytest.LogCaptureFixture, fresh_conn_logger: logging.Logger
) -> None:
    cap_client_logging()
    cap_client_logging()  # twice: the worker and the CLI may both cap
    conn = fresh_conn_logger
    with caplog.at_level(logging.WARNING, logger="aiokafka.conn"):
        for _ in range(19):  # what aiokafka logged in 40 s of one worker over SASL_PLAINTEXT
            conn.warning("Sending username and password in the clear")
        conn.warning("Unable to connect to node")
    assert [r.getMessage() for r in caplog.records] == [
        "Sending username and password in the clear",
        "Unable to connect to node",
    ]
