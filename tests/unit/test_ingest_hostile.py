"""Hostile bytes never make `parse_event` raise: a record either parses or becomes an
InvalidEvent (its dead letter: tests/unit/agents/test_context.py, test_sealed_dead_letters.py)."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import ConnectionCreated, Event, TokenExpiring
from stream_app.ingest import InvalidEvent, parse_event

PLAIN = "sbx_at_plaintext_value"

HOSTILE = {
    "2 KB of [": b"[" * 2048,
    "200 KB of [": b"[" * 200_000,
    "deep objects": b'{"a":' * 50_000,
    "deep but closed": b'{"a":' * 900 + b"1" + b"}" * 900,
    "invalid UTF-8": b'{"platform": "\xff\xfe\xfa"}',
    "lone surrogate": b'{"access_token": "\\ud800", "platform": "\\udfff"}',
    "huge integer": b'{"x": ' + b"9" * 5000 + b"}",
    "huge float": b'{"x": 1e99999}',
    "UTF-16": json.dumps({"access_token": PLAIN}).encode("utf-16"),
    "NUL": b"\x00" * 64,
    "not an object": b'["access_token", 1]',
}


def _event(**overrides: object) -> dict[str, object]:
    return {
        "event_type": "token.expiring",
        "user_id": str(uuid.uuid4()),
        "platform": "spotify",
        "token_expires_at": None,
    } | overrides


@pytest.mark.parametrize("model", [ConnectionCreated, TokenExpiring])
@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_parse_event_refuses_hostile_bytes_with_an_invalid_event(model: type[Event], raw: bytes) -> None:
    with pytest.raises(InvalidEvent):
        parse_event(model, raw)


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
@pytest.mark.parametrize("field", ["occurred_at", "token_expires_at"])
def test_a_timestamp_that_overflows_in_utc_is_an_invalid_event(field: str, moment: str) -> None:
    with pytest.raises(InvalidEvent, match=rf"^{field}: Value error, timestamp outside 2000-01-01"):
        parse_event(TokenExpiring, json.dumps(_event(**{field: moment})).encode())


@given(st.binary(max_size=512))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_are_parsed_or_refused(raw: bytes) -> None:
    try:
        parse_event(TokenExpiring, raw)
    except InvalidEvent:
        pass


@given(st.integers(min_value=1, max_value=300_000), st.sampled_from([b"[", b'{"a":', b'{"access_token":[']))
@settings(max_examples=30, deadline=None)
def test_any_nesting_depth_is_refused(depth: int, opener: bytes) -> None:
    with pytest.raises(InvalidEvent):
        parse_event(ConnectionCreated, opener * depth)
