"""Nothing readable from a dead letter can be a token: marker tokens planted in any shape of
record (camelCase names, nested at any depth, in lists, in scopes, under duplicate names, in
broken JSON, among non-UTF-8 bytes, in the record's headers) are read from no dead letter,
decoded or not, nor from the log; nor are markers in the record's key, which stays readable only
in the service's own shape; the sealed value, headers and key open to the record's own with the
key, only with it, and only in their own letter. `dlq show` prints nothing of a letter raw that
could be a token or drive the operator's terminal."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.context import WorkerContext
from schemas import ConnectionCreated, DeadLetter
from stream_app.crypto import TokenCipher, generate_key
from stream_app.dlq_show import describe
from stream_app.ingest import InvalidEvent, parse_event
from stream_app.redacted_view import redacted_view
from stream_app.sealed_letters import Headers, LetterSeal, UnsealError
from stream_app.settings import load_settings
from tests.support.dead_letters import opened, readable_markers

TOPIC = "connection.created"
KEY = generate_key()
CIPHERTEXT = TokenCipher(generate_key()).encrypt("under another key")
# Shaped like real tokens (Google's, a refresh token, a GitHub PAT); each example draws its own.
MARKER = st.builds(
    lambda prefix, tail: prefix + tail,
    st.sampled_from(["ya29.a0Af", "1//0gRt", "ghp_Mk", "sbx_at_"]),
    st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789_-", min_size=16, max_size=24),
)
NAMES = st.sampled_from(
    ["access_token", "refresh_token", "accessToken", "refreshToken", "AccessToken", "token", "scopes", "data", "x"]
)
HEADER_NAMES = st.one_of(st.sampled_from(["signature-key-id", "signature", "traceparent", "x-api-key"]), st.text())
HEADER_VALUES = st.one_of(st.none(), st.binary(max_size=24))
USER_KEY = f"{uuid.uuid4()}:spotify".encode()  # the service's own shape: kept readable


class Broker:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def __call__(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append((topic, key, value))


@cache
def worker_context() -> WorkerContext:
    app = faust.App(f"test-sealed-{uuid.uuid4().hex[:6]}", broker="kafka://127.0.0.1:1")
    settings = load_settings(encryption_key=KEY)
    return WorkerContext(app, SimpleNamespace(settings=settings))  # type: ignore[arg-type]


def _members(pairs: list[tuple[str, str]]) -> str:
    """A JSON object written by hand: duplicate names stay."""
    return "{" + ", ".join(f"{json.dumps(name)}: {value}" for name, value in pairs) + "}"


@st.composite
def planted(draw: st.DrawFn, marker: str) -> bytes:
    """A record with ``marker`` somewhere in it: a field value, nested at any depth, in a list,
    in scopes, beside a ciphertext under the same name; then maybe broken or among binary bytes."""
    inner = json.dumps(marker)
    for _ in range(draw(st.integers(0, 6))):  # nest it
        inner = draw(st.sampled_from([f"[{inner}]", _members([(draw(NAMES), inner)])]))
    envelope = [
        ("event_id", json.dumps(str(uuid.uuid4()))),
        ("event_type", '"connection.created"'),
        ("schema_version", "1"),
        ("occurred_at", json.dumps(datetime.now(UTC).isoformat())),
        ("user_id", json.dumps(str(uuid.uuid4()))),
        ("platform", '"spotify"'),
    ]
    shape = draw(st.sampled_from(["field", "scopes", "duplicate", "first of a duplicate"]))
    name = draw(NAMES)
    if shape == "field":
        envelope.append((name, inner))
    elif shape == "scopes":
        envelope.append(("scopes", f'["read", {inner}, "write"]'))
    elif shape == "duplicate":
        envelope += [(name, json.dumps(CIPHERTEXT)), (name, inner)]
    else:  # the first one is what pydantic drops, the last one validates
        envelope += [(name, inner), (name, json.dumps(CIPHERTEXT))]
    envelope = draw(st.permutations(envelope))
    raw = _members(envelope).encode()
    end = raw.index(marker.encode()) + len(marker)
    broken = draw(st.sampled_from(["no", "trailing comma", "truncated", "binary around"]))
    if broken == "trailing comma":
        raw = raw[:-1] + b",}"
    elif broken == "truncated":
        raw = raw[: draw(st.integers(end, len(raw) - 1))]
    elif broken == "binary around":
        raw = draw(st.binary(max_size=8)) + b"\xff\xfe" + raw + draw(st.binary(max_size=8)) + b"\xc3"
    return raw


def _reason(raw: bytes) -> str:
    """What the worker says of the record (as agents/connections.py does)."""
    try:
        parse_event(ConnectionCreated, raw)
    except InvalidEvent as exc:
        return str(exc)
    return "processing error: DecryptionError"


@contextmanager
def captured_log() -> Iterator[list[str]]:
    lines: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: lines.append(logging.Formatter().format(record))  # type: ignore[method-assign]
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@st.composite
def headers_holding(draw: st.DrawFn, marker: str) -> Headers:
    """Any headers (repeated names, null values) with ``marker`` in a value, maybe also in a name,
    as it is or among other bytes."""
    headers = draw(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=5))
    around = draw(st.tuples(st.binary(max_size=8), st.binary(max_size=8)))
    planted = around[0] + marker.encode() + around[1]
    headers.insert(draw(st.integers(0, len(headers))), (draw(HEADER_NAMES), planted))
    if draw(st.booleans()):
        headers.insert(draw(st.integers(0, len(headers))), (f"x-{marker}", draw(HEADER_VALUES)))
    return headers


@st.composite
def key_holding(draw: st.DrawFn, marker: str) -> bytes:
    """A record key with ``marker`` in it: as it is, among other bytes, or where the platform goes."""
    return draw(
        st.sampled_from(
            [
                marker.encode(),
                draw(st.binary(max_size=8)) + marker.encode() + draw(st.binary(max_size=8)),
                f"{uuid.uuid4()}:{marker}".encode(),
                f"{marker}:spotify".encode(),
            ]
        )
    )


def dead_letter_of(
    raw: bytes, offset: int = 11, headers: Headers | None = None, key: bytes | None = USER_KEY
) -> tuple[bytes, bytes, list[str]]:
    """The dead letter the worker sends for ``raw`` (its key and value), and what it logged."""
    context = worker_context()
    broker = Broker()
    context.send = broker  # type: ignore[method-assign]
    message = SimpleNamespace(
        topic=TOPIC, partition=3, offset=offset, key=key, value=raw, headers=headers, tp=(TOPIC, 3)
    )
    with captured_log() as lines:
        asyncio.run(context.dead_letter(SimpleNamespace(message=message), _reason(raw)))  # type: ignore[arg-type]
    [(topic, key, value)] = broker.sent
    assert topic == f"{TOPIC}.dlq"
    return key, value, lines


@given(st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_marker_planted_in_any_shape_is_readable_from_its_dead_letter_or_the_log(data: st.DataObject) -> None:
    marker = data.draw(MARKER)
    raw = data.draw(planted(marker))
    headers = data.draw(headers_holding(marker))
    record_key = data.draw(st.one_of(key_holding(marker), st.just(USER_KEY), st.none()))
    key, value, log_lines = dead_letter_of(raw, headers=headers, key=record_key)
    assert readable_markers([marker], key, value, "\n".join(log_lines).encode()) == []
    letter = DeadLetter.model_validate_json(value)
    assert not letter.value_omitted and letter.value_size == len(raw)
    assert opened(value, KEY) == raw  # kept whole, for a replay after a fix
    assert LetterSeal(KEY).unseal_headers(letter) == headers  # in order, repeated names and nulls kept
    assert LetterSeal(KEY).unseal_key(letter) == record_key  # the key too, exactly
    if record_key == USER_KEY:  # the connection's dead letters stay in order on its partition
        assert (key, letter.key) == (USER_KEY, USER_KEY.decode())
    else:
        assert (key, letter.key) == (b"", None)


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_the_redacted_view_shows_no_marker_planted_in_any_shape(data: st.DataObject) -> None:
    marker = data.draw(MARKER)
    view = redacted_view(data.draw(planted(marker)))
    assert readable_markers([marker], view.encode()) == []


ISSUE_SHAPES = {  # the shapes of issue 9, item 1, as they leaked before values were sealed
    "camelCase": b'{"platform": "spotify", "accessToken": "ya29.camel_MARK", "refreshToken": "1//camel_MARK"}',
    "nested": b'{"platform": "spotify", "data": {"credentials": {"token": "ya29.nested_MARK"}}}',
    "in a list": b'{"platform": "spotify", "tokens": ["ya29.list_MARK"]}',
    "invalid JSON": b'{"platform": "spotify", "credential": "ya29.broken_MARK",}',
    "in scopes": b'{"platform": "spotify", "scopes": ["read", "ya29.scope_MARK"]}',
    "duplicate names": b'{"accessToken": "ya29.dup_MARK", "accessToken": "%s"}' % CIPHERTEXT.encode(),
    "UTF-16": json.dumps({"access_token": "ya29.utf16_MARK"}).encode("utf-16"),
    # what the redaction had to withhold whole, or rewrite
    "beside deep nesting": b'{"access_token": "ya29.deep_MARK", "x": ' + b"[" * 5000,
    "beside a huge integer": b'{"access_token": "ya29.int_MARK", "x": ' + b"9" * 5000 + b"}",
    "beside invalid UTF-8": b'{"access_token": "ya29.utf8_MARK", "x": "\xff"}',
    "truncated": json.dumps({"access_token": "ya29.cut_MARK", "platform": "spotify"}).encode()[:-5],
    "truncated UTF-16": json.dumps({"access_token": "ya29.cut16_MARK", "x": "y"}).encode("utf-16")[:-8],
    "plain then a ciphertext": b'{"access_token": "ya29.first_MARK", "access_token": "%s"}' % CIPHERTEXT.encode(),
}


@pytest.mark.parametrize("raw", ISSUE_SHAPES.values(), ids=ISSUE_SHAPES.keys())
def test_the_shapes_that_leaked_are_sealed(raw: bytes) -> None:
    key, value, log_lines = dead_letter_of(raw)
    forms = [key, value, "\n".join(log_lines).encode()]
    assert not [form for form in forms if b"_MARK" in form or "_MARK".encode("utf-16-le") in form]
    assert readable_markers(["_MARK"], *forms) == []
    assert opened(value, KEY) == raw


def test_a_sealed_value_opens_under_a_retired_key_and_only_at_its_own_position() -> None:
    _key, value, _log = dead_letter_of(b'{"access_token": "ya29.rotate_MARK"}', offset=42)
    letter = DeadLetter.model_validate_json(value)
    assert letter.sealed_key_id == LetterSeal(KEY).key_id != TokenCipher(KEY).current_key_id
    assert LetterSeal(generate_key(), [KEY]).unseal(letter) == b'{"access_token": "ya29.rotate_MARK"}'
    with pytest.raises(UnsealError, match="not one of the configured keys"):
        LetterSeal(generate_key()).unseal(letter)
    moved = letter.model_copy(update={"offset": 43})
    with pytest.raises(UnsealError, match="failed authentication"):
        LetterSeal(KEY).unseal(moved)
    with pytest.raises(UnsealError, match="failed authentication"):
        LetterSeal(KEY).unseal(letter.model_copy(update={"sealed_value": letter.sealed_value[:-8] + "AAAAAAA="}))


async def test_without_a_key_to_seal_with_only_position_and_reason_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    context = worker_context()
    broker = Broker()
    monkeypatch.setattr(context, "send", broker)
    monkeypatch.setattr(context, "letter_seal", None)
    message = SimpleNamespace(
        topic=TOPIC,
        partition=3,
        offset=5,
        key=b"k",
        value=b'{"accessToken": "ya29.x_MARK"}',
        headers=[("x-api-key", b"ya29.h_MARK")],
    )
    await context.dead_letter(SimpleNamespace(message=message), "access_token: Field required")  # type: ignore[arg-type]
    [(_topic, _key, value)] = broker.sent
    letter = DeadLetter.model_validate_json(value)
    assert (letter.topic, letter.partition, letter.offset) == (TOPIC, 3, 5)
    assert letter.reason.startswith("access_token: Field required") and letter.value_omitted
    assert letter.sealed_value == letter.value_base64 == letter.sealed_headers == "" and b"_MARK" not in value


VIEWS: dict[str, tuple[bytes, dict[str, Any] | str]] = {
    "an event": (
        b'{"event_type": "connection.created", "platform": "spotify", "accessToken": "ya29.v_MARK", '
        b'"access_token": "%s", "scopes": ["ya29.s_MARK"], "expires_in": 3600}' % CIPHERTEXT.encode(),
        {
            "event_type": "connection.created",
            "platform": "spotify",
            "<name, 11 chars>": "<11 chars>",
            "access_token": f"<ciphertext, {len(CIPHERTEXT)} chars>",
            "scopes": ["<11 chars>"],
            "expires_in": 3600,
        },
    ),
    "an unknown platform": (b'{"platform": "ya29"}', {"platform": "<4 chars>"}),
    "broken JSON": (b'{"access_token": "ya29.b_MARK",}', "not JSON, 32 bytes"),
}


@pytest.mark.parametrize(("raw", "expected"), VIEWS.values(), ids=VIEWS.keys())
def test_the_redacted_view_keeps_the_shape_and_safe_envelope_fields(raw: bytes, expected: object) -> None:
    view = redacted_view(raw)
    assert (json.loads(view) if isinstance(expected, dict) else view) == expected
    assert "_MARK" not in view


def _shown(value: bytes, seal: LetterSeal) -> str:
    return describe(SimpleNamespace(topic=f"{TOPIC}.dlq", partition=0, offset=9, value=value), seal)


def test_dlq_show_describes_every_kind_of_letter_without_its_value() -> None:
    _key, sealed, _log = dead_letter_of(b'{"platform": "spotify", "accessToken": "ya29.show_MARK"}', offset=8)
    legacy = DeadLetter(
        topic=TOPIC,
        partition=3,
        offset=7,
        key="user:spotify",
        reason="access_token: String should match pattern",
        value_base64=base64.b64encode(b'{"access_token": "ya29.legacy_MARK"}').decode(),
    ).to_bytes()
    lines = {
        "sealed": _shown(sealed, LetterSeal(KEY)),
        "sealed under a key not configured": _shown(sealed, LetterSeal(generate_key())),
        "of an earlier version": _shown(legacy, LetterSeal(KEY)),
        "not a dead letter": _shown(b'{"accessToken": "ya29.foreign_MARK"}', LetterSeal(KEY)),
    }
    assert not [line for line in lines.values() if "_MARK" in line]
    position, _when, key, reason, view, headers = lines["sealed"].split("\t")
    assert (position, key) == (f"{TOPIC}[3]@8", f'key="{USER_KEY.decode()}"') and reason.startswith("reason=")
    assert view == 'value={"platform": "spotify", "<name, 11 chars>": "<14 chars>"}' and headers == "headers=[]"
    assert lines["sealed under a key not configured"].split("\t")[4] == (
        "value=sealed, not opened: sealed under dead-letter key "
        f"{LetterSeal(KEY).key_id}, not one of the configured keys"
    )
    assert lines["of an earlier version"].split("\t")[4] == 'value={"access_token": "<16 chars>"}'

    assert lines["not a dead letter"] == f"{TOPIC}.dlq[0]@9\tnot a dead letter (36 bytes)"


SIGNED: Headers = [
    ("signature-key-id", b"producer-1"),
    ("x-trace", b"ya29.trace_MARK"),
    ("signature", b"ab" * 32),
    ("x-trace", None),
    ("x-trace", b""),
]


def test_sealed_headers_open_in_their_own_letter_only_never_as_its_value() -> None:
    _key, value, _log = dead_letter_of(b'{"event_type": "connection.created"}', offset=42, headers=SIGNED)
    letter = DeadLetter.model_validate_json(value)
    assert letter.sealed_headers and b"_MARK" not in value
    assert LetterSeal(KEY).unseal_headers(letter) == SIGNED
    assert LetterSeal(generate_key(), [KEY]).unseal_headers(letter) == SIGNED  # a retired key opens them
    with pytest.raises(UnsealError, match="not one of the configured keys"):
        LetterSeal(generate_key()).unseal_headers(letter)

    # Moved into another letter (another position): they do not open.
    _key, other_value, _log = dead_letter_of(b'{"event_type": "connection.created"}', offset=43)
    other = DeadLetter.model_validate_json(other_value)
    for moved in (
        other.model_copy(update={"sealed_headers": letter.sealed_headers}),
        letter.model_copy(update={"offset": 43}),
        letter.model_copy(update={"partition": 4}),
        letter.model_copy(update={"topic": "token.expiring"}),
    ):
        with pytest.raises(UnsealError, match="sealed headers failed authentication"):
            LetterSeal(KEY).unseal_headers(moved)
    # Swapped with the value at the same position: neither opens as the other.
    swapped = letter.model_copy(update={"sealed_value": letter.sealed_headers, "sealed_headers": letter.sealed_value})
    with pytest.raises(UnsealError, match="sealed value failed authentication"):
        LetterSeal(KEY).unseal(swapped)
    with pytest.raises(UnsealError, match="sealed headers failed authentication"):
        LetterSeal(KEY).unseal_headers(swapped)
    with pytest.raises(UnsealError, match="sealed headers failed authentication"):
        tampered = letter.sealed_headers[:-8] + "AAAAAAA="
        LetterSeal(KEY).unseal_headers(letter.model_copy(update={"sealed_headers": tampered}))


def test_a_letter_without_its_value_keeps_no_headers_and_earlier_letters_have_none() -> None:
    too_large = b'{"x": "' + b"y" * (1024 * 1024) + b'"}'
    _key, value, _log = dead_letter_of(too_large, headers=SIGNED)
    letter = DeadLetter.model_validate_json(value)
    assert letter.value_omitted and letter.sealed_headers == "" and b"_MARK" not in value
    assert LetterSeal(KEY).unseal_headers(letter) is None
    sealed = LetterSeal(KEY).seal(b"{}", TOPIC, 3, 7)  # as the version before headers were kept wrote it
    earlier = DeadLetter(
        topic=TOPIC,
        partition=3,
        offset=7,
        key=None,
        reason="r",
        sealed_value=sealed.sealed_base64,
        sealed_key_id=sealed.key_id,
    )
    assert LetterSeal(KEY).unseal(earlier) == b"{}" and LetterSeal(KEY).unseal_headers(earlier) is None


def test_dlq_show_prints_header_names_and_sizes_never_their_values() -> None:
    _key, sealed, _log = dead_letter_of(b'{"platform": "spotify"}', offset=8, headers=SIGNED)
    _key, bare, _log = dead_letter_of(b'{"platform": "spotify"}', offset=9)
    legacy = DeadLetter(topic=TOPIC, partition=3, offset=7, key=None, reason="r", value_base64="e30=").to_bytes()
    lines = {
        "signed": _shown(sealed, LetterSeal(KEY)),
        "no headers": _shown(bare, LetterSeal(KEY)),
        "not opened": _shown(sealed, LetterSeal(generate_key())),
        "earlier": _shown(legacy, LetterSeal(KEY)),
    }
    assert not [line for line in lines.values() if "_MARK" in line or "producer-1" in line or "abab" in line]
    assert lines["signed"].split("\t")[-1] == (
        'headers=[["signature-key-id", 10], ["<name, 7 chars>", 15], ["signature", 64], ["<name, 7 chars>", null], '
        '["<name, 7 chars>", 0]]'
    )
    assert lines["no headers"].split("\t")[-1] == "headers=[]"
    assert lines["not opened"].split("\t")[-1].startswith("headers=sealed, not opened: sealed under dead-letter key")
    assert lines["earlier"].split("\t")[-1] == "headers=not kept (a dead letter of an earlier version)"


def test_dlq_show_prints_no_header_name_but_the_signature_headers() -> None:
    headers: Headers = [("ya29.HeaderNameToken", b"1"), ("signature-key-id", b"p1"), ("signature", b"ab")]
    _key, sealed, _log = dead_letter_of(b"{}", offset=8, headers=headers)
    line = _shown(sealed, LetterSeal(KEY))
    assert "HeaderNameToken" not in line
    assert line.split("\t")[-1] == 'headers=[["<name, 20 chars>", 1], ["signature-key-id", 2], ["signature", 2]]'


def test_dlq_show_prints_a_key_only_in_the_services_own_shape() -> None:
    _key, hidden, _log = dead_letter_of(b"{}", offset=8, key=b"ya29.KeyToken_MARK")
    _key, readable, _log = dead_letter_of(b"{}", offset=9)
    _key, keyless, _log = dead_letter_of(b"{}", offset=10, key=None)
    forged = {"topic": TOPIC, "partition": 3, "offset": 7, "reason": "r", "value_base64": "e30="}
    earlier = DeadLetter(**forged, key="ya29.old_MARK").to_bytes()  # letters of earlier versions kept any key
    keys = {
        name: _shown(letter, LetterSeal(KEY)).split("\t")[2]
        for name, letter in [("hidden", hidden), ("readable", readable), ("keyless", keyless), ("earlier", earlier)]
    }
    assert keys == {
        "hidden": "key=<key, 18 bytes>",
        "readable": f'key="{USER_KEY.decode()}"',
        "keyless": "key=null",
        "earlier": "key=<key, 13 bytes>",
    }


def test_dlq_show_escapes_control_characters_of_a_forged_letter() -> None:
    escape = "\x1b]0;owned\x07\x1b[2J\x9b31m\x7f\r"
    forged = DeadLetter(
        topic=f"{TOPIC}{escape}", partition=3, offset=7, key=f"{uuid.uuid4()}:spotify{escape}", reason=escape
    )
    line = _shown(forged.to_bytes(), LetterSeal(KEY))
    assert [c for c in line if c != "\t" and (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F)] == []
    assert line.startswith(f"{TOPIC}\\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\x7f\\x0d[3]@7\t")
