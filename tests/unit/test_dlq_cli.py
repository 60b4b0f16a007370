"""``token-refresh dlq replay``: what it prints from a dead letter cannot drive the operator's
terminal (control characters are escaped), and ``--legacy`` is what lets letters of earlier
versions be replayed."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from click.testing import CliRunner

import stream_app.dlq_replay
from stream_app.cli import cli
from stream_app.crypto import generate_key
from stream_app.dlq_replay import LEGACY_REFUSED, NotReplayed, ReplayEntry, ReplayReport

ESCAPES = "\x1b]0;owned\x07\x1b[2J\x9b31m\x7f\r"


def _is_control(char: str) -> bool:
    return (ord(char) < 0x20 and char not in "\t\n") or 0x7F <= ord(char) <= 0x9F


@pytest.fixture
def replays(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The calls to replay_dead_letters; each returns a dry run's report of a forged letter."""
    monkeypatch.setenv("ENCRYPTION_KEY", generate_key())
    calls: list[dict[str, Any]] = []

    async def fake_replay(_settings: Any, topic: str, **options: Any) -> ReplayReport:
        calls.append({"topic": topic, **{name: options.get(name) for name in ("dry_run", "legacy")}})
        report = ReplayReport(dry_run=True, replayed=1, by_reason=Counter({f"reason{ESCAPES}": 1}))
        report.entries.append(ReplayEntry(f"connection.created{ESCAPES}", 0, 7, f"reason{ESCAPES}"))
        report.not_replayed.append(NotReplayed("connection.created", 0, 8, "r", LEGACY_REFUSED, 0, 1))
        return report

    monkeypatch.setattr(stream_app.dlq_replay, "replay_dead_letters", fake_replay)
    return calls


def test_dlq_replay_prints_no_control_character_from_a_letter(replays: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(cli, ["dlq", "replay", "--dry-run", "connection.created.dlq"])
    assert result.exit_code == 1  # one not replayed
    assert [c for c in result.output if _is_control(c)] == []
    assert "connection.created\\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\x7f\\x0d[0]@7\treason\\x1b]0;" in result.output
    assert "  1\treason\\x1b]0;owned" in result.output
    assert f"1 of an earlier version not replayed: {LEGACY_REFUSED}" in result.output


def test_only_the_legacy_flag_lets_letters_of_earlier_versions_be_replayed(replays: list[dict[str, Any]]) -> None:
    CliRunner().invoke(cli, ["dlq", "replay", "--dry-run", "connection.created.dlq"])
    CliRunner().invoke(cli, ["dlq", "replay", "--legacy", "connection.created.dlq"])
    assert replays == [
        {"topic": "connection.created.dlq", "dry_run": True, "legacy": False},
        {"topic": "connection.created.dlq", "dry_run": False, "legacy": True},
    ]
    assert "--legacy" in LEGACY_REFUSED
