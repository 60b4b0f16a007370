"""What `token-refresh replay` shows of any record, whatever its bytes: never a crash, never a
string that could be a token, never a control character on the terminal."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from aiokafka import ConsumerRecord

from schemas import ProviderCircuitChanged, TokenRefreshFailed
from stream_app.privacy import UserIdHasher
from stream_app.replay_output import JsonLines, Tables
from stream_app.replay_view import RecordFilter, view_record

USER = uuid.uuid4()
KEY = f"{USER}:spotify".encode()


def record(value: bytes | None, key: bytes | None = KEY) -> ConsumerRecord:
    return ConsumerRecord(
        topic="token.refresh_failed",
        partition=0,
        offset=3,
        timestamp=1_767_225_600_000,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        headers=(),
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b'{"event_type": ["token.refreshed"]}', "not an event of a known event_type"),
        (b'{"event_type": {"a": 1}}', "not an event of a known event_type"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b'{"event_type": "token.refreshed", "user_id": "x"}', "not a valid token.refreshed event"),
        (b"\xff\xfe", "not JSON"),
        (b"12", "not an event of a known event_type"),
    ],
)
def test_a_value_that_is_no_event_is_redacted_not_a_crash(value: bytes, problem: str) -> None:
    view = view_record(record(value), None)
    assert view.fields["value"] is None and view.fields["problem"].startswith(problem)
    assert isinstance(view.fields["redacted"], str)


def test_a_circuit_change_is_shown_decoded_as_the_event_it_is() -> None:
    change = ProviderCircuitChanged(platform="spotify", state="open", worker="host:1", cool_down_seconds=30)
    view = view_record(record(change.to_bytes(), key=b"spotify"), None)
    assert view.fields["value"]["state"] == "open" and "problem" not in view.fields
    assert (view.user_id, view.platform) == (None, "spotify")


def test_a_key_of_another_shape_is_shown_by_its_size() -> None:
    assert view_record(record(b"{}", key="tok\u00e9n-secret".encode()), None).fields["key"] == "<key, 13 bytes>"
    assert view_record(record(b"{}", key=None), None).fields["key"] is None
    assert view_record(record(b"{}"), None).fields["key"] == KEY.decode()


def test_a_service_events_text_reaches_the_terminal_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # rich's width off a terminal: no cell folds
    failed = TokenRefreshFailed(
        user_id=USER,
        platform="spotify",
        error_class="server_error",
        error="\x1b[2J\x9b31m",
        status="error",
        will_retry=True,
    )
    view = view_record(record(failed.to_bytes()), None)
    assert view.fields["value"]["error"] == "\x1b[2J\x9b31m"  # decoded, as the event holds it
    lines: list[str] = []
    JsonLines(lines.append)([view])
    table = io.StringIO()
    Tables(table, each_batch=True)([view])
    for printed in (lines[0], table.getvalue()):
        assert "\x1b" not in printed and "\x9b" not in printed
    assert json.loads(lines[0])["value"]["error"] == "\x1b[2J\x9b31m"
    assert '"error":"\\u001b[2J\\u009b31m"' in table.getvalue()


def test_a_user_is_found_by_uuid_in_any_spelling_or_by_its_log_hash() -> None:
    hasher = UserIdHasher("k" * 32)
    view = view_record(record(b"not json"), None)  # no event: the key says whose it is
    assert RecordFilter(None, USER.hex.upper(), hasher).keeps(view)
    assert RecordFilter("spotify", hasher(USER), hasher).keeps(view)
    assert not RecordFilter("discord", str(USER), hasher).keeps(view)
    assert not RecordFilter(None, str(uuid.uuid4()), hasher).keeps(view)
    with pytest.raises(ValueError, match="--user"):
        RecordFilter(None, "alice", hasher)
