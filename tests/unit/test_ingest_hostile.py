"""Hostile bytes never make `parse_event` or `redact_plaintext_tokens` raise: a record either
parses or becomes an InvalidEvent, and its copy for a dead letter is always computed."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import ConnectionCreated, Event, TokenExpiring
from stream_app.ingest import REDACTED, InvalidEvent, parse_event, redact_plaintext_tokens

CIPHERTEXT = "00" * 12 + ":" + "11" * 16 + ":abcd"
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


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_redaction_never_raises(raw: bytes) -> None:
    value, redacted = redact_plaintext_tokens(raw)
    assert isinstance(value, bytes) and isinstance(redacted, bool)


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
def test_arbitrary_bytes_are_parsed_or_refused_and_always_redactable(raw: bytes) -> None:
    redact_plaintext_tokens(raw)
    try:
        parse_event(TokenExpiring, raw)
    except InvalidEvent:
        pass


@given(st.integers(min_value=1, max_value=300_000), st.sampled_from([b"[", b'{"a":', b'{"access_token":[']))
@settings(max_examples=30, deadline=None)
def test_any_nesting_depth_is_refused_and_redactable(depth: int, opener: bytes) -> None:
    redact_plaintext_tokens(opener * depth)
    with pytest.raises(InvalidEvent):
        parse_event(ConnectionCreated, opener * depth)


LEAKS = {
    "plain token beside deep nesting": b'{"access_token": "%s", "x": ' % PLAIN.encode() + b"[" * 5000,
    "plain token beside a huge integer": b'{"access_token": "%s", "x": ' % PLAIN.encode() + b"9" * 5000 + b"}",
    "plain token beside invalid UTF-8": b'{"access_token": "%s", "x": "\xff"}' % PLAIN.encode(),
    "plain token then a ciphertext under the same name": json.dumps({"access_token": PLAIN})[:-1].encode()
    + b', "access_token": "%s"}' % CIPHERTEXT.encode(),
    "plain token inside a list": json.dumps([{"refresh_token": PLAIN}]).encode(),
    "plain token as a list": json.dumps({"access_token": [PLAIN]}).encode(),
    "plain token nested": json.dumps({"data": {"access_token": PLAIN}}).encode(),
    "truncated record": json.dumps({"access_token": PLAIN, "platform": "spotify"}).encode()[:-5],
    "truncated UTF-16 record": json.dumps({"access_token": PLAIN, "platform": "spotify"}).encode("utf-16")[:-8],
}


@pytest.mark.parametrize("raw", LEAKS.values(), ids=LEAKS.keys())
def test_a_plain_text_token_never_survives_redaction_whatever_surrounds_it(raw: bytes) -> None:
    value, redacted = redact_plaintext_tokens(raw)
    assert PLAIN.encode() not in value and PLAIN.encode("utf-16-le") not in value
    assert redacted is True


def test_a_record_without_plain_tokens_is_kept_byte_for_byte() -> None:
    raw = json.dumps(_event(access_token=CIPHERTEXT, refresh_token=None)).encode()
    assert redact_plaintext_tokens(raw) == (raw, False)
    assert redact_plaintext_tokens(b"[" * 2048) == (b"[" * 2048, False)


def test_a_parsable_record_keeps_everything_but_its_plain_tokens() -> None:
    event = _event(access_token=PLAIN, refresh_token=CIPHERTEXT)
    value, redacted = redact_plaintext_tokens(json.dumps(event).encode())
    assert redacted is True and json.loads(value) == event | {"access_token": REDACTED}
