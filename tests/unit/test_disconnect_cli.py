"""`token-refresh disconnect` fails with one line and an exit code, never a traceback."""

from __future__ import annotations

import uuid

import pytest
from click.testing import CliRunner

from stream_app.cli import cli
from stream_app.crypto import generate_key


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCRYPTION_KEY", generate_key())
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # nothing listens there


@pytest.mark.parametrize(
    ("arguments", "code", "line"),
    [
        (["not-a-uuid", "spotify"], 2, "token-refresh: USER_ID: not a UUID: 'not-a-uuid'"),
        ([str(uuid.UUID(int=1)), "myspace"], 1, "token-refresh: unknown platform 'myspace'"),
        (
            [str(uuid.UUID(int=1)), "spotify"],
            1,
            "token-refresh: Kafka: cannot publish to connection.disconnected (KafkaConnectionError)",
        ),
    ],
)
def test_a_failure_is_one_line_and_a_non_zero_exit(arguments: list[str], code: int, line: str) -> None:
    result = CliRunner().invoke(cli, ["disconnect", *arguments])

    assert result.exit_code == code, result.output
    assert result.stderr.splitlines() == [line]


def test_an_unknown_reason_is_refused_by_click() -> None:
    result = CliRunner().invoke(cli, ["disconnect", str(uuid.UUID(int=1)), "spotify", "--reason", "bored"])

    assert result.exit_code == 2 and "Invalid value for '--reason'" in result.stderr
