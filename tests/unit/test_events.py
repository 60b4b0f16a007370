"""The wire format (contract §2): every event model accepts valid JSON and refuses the rest,
and `parse_event` turns refusals into dead-letter reasons that name the field, not the token."""

from __future__ import annotations

import json
import unicodedata
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas import (
    EVENT_TYPES,
    ConnectionCreated,
    Event,
    TokenExpiring,
    TokenNeedsReauth,
    TokenRefreshed,
    TokenRefreshFailed,
    connection_key,
)
from stream_app.crypto import TokenCipher
from stream_app.ingest import InvalidEvent, parse_event

USER_ID = "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b"
PLAINTEXT_TOKEN = "sbx_rt_abc"
ONE_MIB = 1024 * 1024
IV12, IV16, TAG = "0" * 23 + "1", "0" * 31 + "1", "ab" * 16
CIPHERTEXT = f"{IV12}:{TAG}:{'cd' * 20}"


def envelope(event_type: str, platform: str = "spotify") -> dict[str, Any]:
    return {
        "event_id": "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d",
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": "2025-03-01T12:00:00Z",
        "user_id": USER_ID,
        "platform": platform,
    }


VALID: dict[type[Event], dict[str, Any]] = {
    ConnectionCreated: {
        **envelope("connection.created"),
        "access_token": CIPHERTEXT,
        "refresh_token": f"{IV16}:{TAG}:{'ef' * 30}",
        "token_expires_at": "2025-03-01T13:00:00+00:00",
        "scopes": ["user-read-email", "playlist-read-private"],
    },
    TokenExpiring: {
        **envelope("token.expiring"),
        "token_expires_at": "2025-03-01T12:04:00Z",
        "reason": "manual",
    },
    TokenRefreshed: {
        **envelope("token.refreshed"),
        "token_expires_at": "2025-03-01T13:00:00Z",
        "expires_in": 3600,
        "attempts": 1,
        "duration_ms": 250,
        "refresh_token_rotated": False,
        "reason": "scheduled",
    },
    TokenNeedsReauth: {
        **envelope("token.needs_reauth"),
        "reason": "invalid_grant",
        "error": "invalid_grant: Refresh token revoked",
        "status": "needs_reauth",
    },
    TokenRefreshFailed: {
        **envelope("token.refresh_failed"),
        "error_class": "invalid_client",
        "error": "invalid_client: Invalid client",
        "status": "error",
        "will_retry": False,
    },
}
MODELS = list(VALID)
REQUIRED: dict[type[Event], list[str]] = {
    ConnectionCreated: [
        "user_id",
        "platform",
        "access_token",
        "refresh_token",
        "token_expires_at",
    ],
    TokenExpiring: ["user_id", "platform", "token_expires_at"],
    TokenRefreshed: [
        "user_id",
        "platform",
        "token_expires_at",
        "expires_in",
        "attempts",
        "duration_ms",
        "refresh_token_rotated",
        "reason",
    ],
    TokenNeedsReauth: ["user_id", "platform", "reason"],
    TokenRefreshFailed: ["user_id", "platform", "error_class", "status", "will_retry"],
}


def as_json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def changed(model: type[Event], **changes: Any) -> bytes:
    return as_json({**VALID[model], **changes})


def without(model: type[Event], field: str) -> bytes:
    return as_json({name: value for name, value in VALID[model].items() if name != field})


def model_id(model: type[Event]) -> str:
    return model.__name__


# --- acceptance ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, ids=model_id)
def test_valid_payload_is_accepted(model: type[Event]) -> None:
    event = model.model_validate_json(as_json(VALID[model]))

    assert event.user_id == uuid.UUID(USER_ID)
    assert event.platform == "spotify"
    assert event.event_type == model.default_topic
    assert event.schema_version == 1
    assert event.occurred_at == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_event_types_cover_the_contract_topics() -> None:
    assert set(EVENT_TYPES) == {
        "connection.created",
        "token.expiring",
        "token.refreshed",
        "token.needs_reauth",
        "token.refresh_failed",
        # The contract's extension (README: Disconnecting).
        "connection.disconnected",
        "token.revoked",
    }
    assert all(model.default_topic == topic for topic, model in EVENT_TYPES.items())


def test_connection_created_accepts_a_never_refreshed_token() -> None:
    event = ConnectionCreated.model_validate_json(
        changed(
            ConnectionCreated,
            platform="github",
            refresh_token=None,
            token_expires_at=None,
            scopes=None,
        )
    )

    assert event.refresh_token is None
    assert event.token_expires_at is None


def test_connection_created_accepts_real_ciphertexts(encryption_key: str) -> None:
    cipher = TokenCipher(encryption_key)
    raw = changed(
        ConnectionCreated,
        access_token=cipher.encrypt("at"),
        refresh_token=cipher.encrypt(""),
    )

    event = ConnectionCreated.model_validate_json(raw)

    assert cipher.decrypt(event.access_token) == "at"


def test_offset_timestamps_are_normalised_to_utc() -> None:
    event = TokenExpiring.model_validate_json(
        changed(
            TokenExpiring,
            occurred_at="2025-03-01T14:00:00+02:00",
            token_expires_at="2025-03-01T07:05:00-05:00",
        )
    )

    assert event.occurred_at == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert event.occurred_at.utcoffset() is not None and not event.occurred_at.utcoffset()
    assert event.token_expires_at == datetime(2025, 3, 1, 12, 5, tzinfo=UTC)


def test_unknown_fields_are_ignored() -> None:
    event = TokenExpiring.model_validate_json(changed(TokenExpiring, producer="php-callback", trace={"a": 1}))

    assert "producer" not in event.model_dump()


# --- refusal ------------------------------------------------------------------------------


def _missing_cases() -> list[Any]:
    return [
        pytest.param(model, field, without(model, field), id=f"{model.__name__}-missing-{field}")
        for model, fields in REQUIRED.items()
        for field in fields
    ]


_ENVELOPE_CASES: list[tuple[str, str, Any]] = [
    ("user-id-not-uuid", "user_id", "user-42"),
    ("user-id-number", "user_id", 42),
    ("platform-upper-case", "platform", "Spotify"),
    ("platform-hyphen", "platform", "google-calendar"),
    ("platform-leading-digit", "platform", "1password"),
    ("platform-too-long", "platform", "a" * 33),
    ("platform-empty", "platform", ""),
    ("platform-number", "platform", 7),
    ("schema-version-2", "schema_version", 2),
    ("schema-version-string", "schema_version", "one"),
    ("event-type-of-another-topic", "event_type", "token.other"),
    ("occurred-at-naive", "occurred_at", "2025-03-01T12:00:00"),
    ("occurred-at-1970", "occurred_at", "1970-01-01T00:00:00Z"),
    ("occurred-at-9999", "occurred_at", "9999-12-31T23:59:59Z"),
    ("occurred-at-before-year-1-in-utc", "occurred_at", "0001-01-01T00:00:00+05:00"),
    ("occurred-at-after-year-9999-in-utc", "occurred_at", "9999-12-31T23:59:59-05:00"),
    ("occurred-at-garbage", "occurred_at", "yesterday"),
    ("event-id-not-uuid", "event_id", "evt-1"),
]


def _envelope_cases() -> list[Any]:
    return [
        pytest.param(
            model,
            field,
            changed(model, **{field: value}),
            id=f"{model.__name__}-{name}",
        )
        for model in MODELS
        for name, field, value in _ENVELOPE_CASES
    ]


_SPECIFIC_CASES: list[tuple[type[Event], str, str, Any]] = [
    (ConnectionCreated, "access-token-plaintext", "access_token", PLAINTEXT_TOKEN),
    (ConnectionCreated, "refresh-token-plaintext", "refresh_token", PLAINTEXT_TOKEN),
    (ConnectionCreated, "access-token-upper-hex", "access_token", CIPHERTEXT.upper()),
    (
        ConnectionCreated,
        "access-token-8-byte-iv",
        "access_token",
        f"{'0' * 16}:{TAG}:cdcd",
    ),
    (ConnectionCreated, "access-token-odd-hex", "access_token", CIPHERTEXT + "c"),
    (ConnectionCreated, "access-token-null", "access_token", None),
    (
        ConnectionCreated,
        "access-token-oversized",
        "access_token",
        f"{IV12}:{TAG}:{'cd' * 40_000}",
    ),
    (ConnectionCreated, "expires-naive", "token_expires_at", "2025-03-01T13:00:00"),
    (ConnectionCreated, "expires-1970", "token_expires_at", "1970-01-01T00:00:00Z"),
    (ConnectionCreated, "expires-9999", "token_expires_at", "9999-01-01T00:00:00Z"),
    (ConnectionCreated, "expires-before-year-1-in-utc", "token_expires_at", "0001-01-01T00:00:00+05:00"),
    (TokenExpiring, "expires-after-year-9999-in-utc", "token_expires_at", "9999-12-31T23:59:59-05:00"),
    (ConnectionCreated, "scopes-oversized-list", "scopes", ["s"] * 257),
    (ConnectionCreated, "scopes-oversized-item", "scopes", ["s" * 513]),
    (ConnectionCreated, "scopes-string", "scopes", "user-read-email"),
    (TokenExpiring, "reason-unknown", "reason", "whenever"),
    (TokenExpiring, "expires-naive", "token_expires_at", "2025-03-01T12:04:00"),
    (TokenRefreshed, "attempts-word", "attempts", "three"),
    (TokenRefreshed, "attempts-fraction", "attempts", 1.5),
    (TokenRefreshed, "duration-list", "duration_ms", [250]),
    (TokenRefreshed, "rotated-word", "refresh_token_rotated", "maybe"),
    (TokenRefreshed, "reason-unknown", "reason", "cron"),
    (TokenRefreshed, "expires-9999", "token_expires_at", "9999-01-01T00:00:00Z"),
    (TokenNeedsReauth, "status-connected", "status", "connected"),
    (TokenNeedsReauth, "reason-number", "reason", 400),
    (TokenRefreshFailed, "will-retry-word", "will_retry", "perhaps"),
    (TokenRefreshFailed, "status-null", "status", None),
]


def _specific_cases() -> list[Any]:
    return [
        pytest.param(
            model,
            field,
            changed(model, **{field: value}),
            id=f"{model.__name__}-{name}",
        )
        for model, name, field, value in _SPECIFIC_CASES
    ]


INVALID = _missing_cases() + _envelope_cases() + _specific_cases()


@pytest.mark.parametrize(("model", "field", "raw"), INVALID)
def test_invalid_payload_is_refused_naming_the_field(model: type[Event], field: str, raw: bytes) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate_json(raw)

    assert field in {str(error["loc"][0]) for error in caught.value.errors()}


@pytest.mark.parametrize(("model", "field", "raw"), INVALID)
def test_parse_event_turns_refusal_into_invalid_event(model: type[Event], field: str, raw: bytes) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(model, raw)

    reason = str(caught.value)
    assert field in reason
    assert "\n" not in reason
    assert PLAINTEXT_TOKEN not in reason


@pytest.mark.parametrize("model", MODELS, ids=model_id)
def test_parse_event_accepts_a_valid_record(model: type[Event]) -> None:
    event = parse_event(model, as_json(VALID[model]))

    assert event == model.model_validate_json(as_json(VALID[model]))


@pytest.mark.parametrize("model", MODELS, ids=model_id)
def test_parse_event_refuses_an_unknown_platform(model: type[Event]) -> None:
    # The name is not quoted: a token can have a platform key's shape (dead-letter reasons are readable).
    with pytest.raises(InvalidEvent, match=r"^platform: unknown platform \(7 characters") as refused:
        parse_event(model, changed(model, platform="myspace"))
    assert "myspace" not in str(refused.value)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"not json",
        b"[]",
        b"\xff\xfe",
        b'{"event_type": "connection.created"',
    ],
)
def test_parse_event_refuses_records_that_are_not_an_object(raw: bytes | None) -> None:
    with pytest.raises(InvalidEvent):
        parse_event(TokenExpiring, raw)


def _padded_to(model: type[Event], size: int) -> bytes:
    raw = as_json(VALID[model])
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


def test_parse_event_accepts_a_record_of_exactly_one_mib() -> None:
    raw = _padded_to(TokenExpiring, ONE_MIB)
    assert len(raw) == ONE_MIB

    assert parse_event(TokenExpiring, raw).platform == "spotify"


def test_parse_event_refuses_a_record_over_one_mib() -> None:
    raw = _padded_to(TokenExpiring, ONE_MIB + 1)

    with pytest.raises(InvalidEvent, match=str(ONE_MIB)):
        parse_event(TokenExpiring, raw)


@pytest.mark.parametrize(
    "changes",
    [
        {"access_token": PLAINTEXT_TOKEN},
        {"refresh_token": PLAINTEXT_TOKEN},
        {
            "access_token": PLAINTEXT_TOKEN,
            "refresh_token": PLAINTEXT_TOKEN,
            "user_id": "nope",
        },
        {"access_token": {"value": PLAINTEXT_TOKEN}},
        {"access_token": [PLAINTEXT_TOKEN]},
        {"scopes": [PLAINTEXT_TOKEN] * 300},
    ],
    ids=["access", "refresh", "both-and-more", "nested-object", "list", "in-scopes"],
)
def test_dead_letter_reason_never_carries_the_token(changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(ConnectionCreated, changed(ConnectionCreated, **changes))

    assert PLAINTEXT_TOKEN not in str(caught.value)


def test_dead_letter_reason_is_bounded_for_a_record_full_of_errors() -> None:
    payload = {name: [PLAINTEXT_TOKEN] for name in VALID[TokenRefreshed]}

    with pytest.raises(InvalidEvent) as caught:
        parse_event(TokenRefreshed, as_json(payload))

    assert len(str(caught.value)) < 1000
    assert PLAINTEXT_TOKEN not in str(caught.value)


# --- what the database or a consumer would choke on ----------------------------------------

INPUT_MODELS: list[type[Event]] = [ConnectionCreated, TokenExpiring]  # the events the service consumes
# Unicode's control characters (category Cc): C0, DEL, C1. NUL is what PostgreSQL refuses.
CONTROL_CHARACTERS = ["\x00", "\x01", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x80", "\x85", "\x9f"]


def _with_control_character(value: Any, character: str) -> Any:
    """A field's valid value with ``character`` inside it (a string in its place if it has none)."""
    if isinstance(value, str):
        return value[:1] + character + value[1:]
    if isinstance(value, list):
        return [*value, f"read{character}write"]
    return f"1{character}"


def _control_character_cases() -> list[Any]:
    return [
        pytest.param(model, field, character, id=f"{model.__name__}-{field}-U+{ord(character):04X}")
        for model in INPUT_MODELS
        for field in model.model_fields
        for character in CONTROL_CHARACTERS
    ]


@pytest.mark.parametrize(("model", "field", "character"), _control_character_cases())
def test_a_control_character_in_any_string_of_an_input_event_is_refused_naming_the_field(
    model: type[Event], field: str, character: str
) -> None:
    payload = VALID[model]
    raw = as_json({**payload, field: _with_control_character(payload.get(field), character)})

    with pytest.raises(InvalidEvent) as caught:
        parse_event(model, raw)

    assert str(caught.value) == f"{field}: Value error, control character U+{ord(character):04X} not allowed"


@given(st.lists(st.text(max_size=512), max_size=8))
@settings(max_examples=300, deadline=None)
def test_scopes_are_refused_exactly_when_one_holds_a_control_character(scopes: list[str]) -> None:
    raw = changed(ConnectionCreated, scopes=scopes)
    has_control = any(unicodedata.category(char) == "Cc" for scope in scopes for char in scope)

    if has_control:
        with pytest.raises(InvalidEvent, match=r"^scopes: Value error, control character U\+"):
            parse_event(ConnectionCreated, raw)
    else:
        assert parse_event(ConnectionCreated, raw).scopes == scopes


def test_scopes_keep_any_printable_text() -> None:
    scopes = ["https://www.googleapis.com/auth/gmail.readonly", "chat:write", "", "é ☃ 😀", "\xa0", "\u2028"]

    assert parse_event(ConnectionCreated, changed(ConnectionCreated, scopes=scopes)).scopes == scopes


@pytest.mark.parametrize(
    "raw",
    [
        b'{"scopes": ["\\ud800"]}',  # a lone surrogate: not UTF-8 once decoded
        b'{"scopes": ["\xff\xfe"]}',  # invalid UTF-8
    ],
    ids=["lone-surrogate", "invalid-utf8"],
)
def test_strings_that_are_not_unicode_are_refused_by_the_json_parser(raw: bytes) -> None:
    with pytest.raises(InvalidEvent, match="Invalid JSON"):
        parse_event(ConnectionCreated, raw)


@pytest.mark.parametrize("field", ["occurred_at", "token_expires_at"])
@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_a_timestamp_with_no_utc_equivalent_is_out_of_range(field: str, moment: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(TokenExpiring, changed(TokenExpiring, **{field: moment}))

    assert str(caught.value) == f"{field}: Value error, timestamp outside 2000-01-01 .. 2200-01-01"


# --- keys and bytes -----------------------------------------------------------------------


def test_connection_key_is_user_colon_platform() -> None:
    user_id = uuid.UUID(USER_ID)

    assert connection_key(user_id, "google_calendar") == f"{USER_ID}:google_calendar"
    assert connection_key(USER_ID, "x") == f"{USER_ID}:x"


@pytest.mark.parametrize("model", MODELS, ids=model_id)
def test_event_key_is_the_connection_key(model: type[Event]) -> None:
    event = model.model_validate_json(changed(model, user_id=USER_ID.upper()))

    assert event.key == f"{USER_ID}:spotify"
    assert event.key.encode("utf-8") == connection_key(USER_ID, "spotify").encode()
    user_part, platform_part = event.key.rsplit(":", 1)
    assert (uuid.UUID(user_part), platform_part) == (event.user_id, event.platform)


@pytest.mark.parametrize("model", MODELS, ids=model_id)
def test_to_bytes_round_trips(model: type[Event]) -> None:
    event = model.model_validate_json(as_json(VALID[model]))

    raw = event.to_bytes()

    assert isinstance(raw, bytes)
    assert model.model_validate_json(raw) == event
    assert parse_event(model, raw) == event
    document = json.loads(raw.decode("utf-8"))
    assert document["event_type"] == model.default_topic
    assert document["schema_version"] == 1
    assert document["user_id"] == USER_ID
    assert document["occurred_at"] in (
        "2025-03-01T12:00:00Z",
        "2025-03-01T12:00:00+00:00",
    )


def test_built_events_get_unique_ids_and_an_aware_occurred_at() -> None:
    first, second = (
        TokenExpiring(user_id=uuid.UUID(USER_ID), platform="discord", token_expires_at=None) for _ in range(2)
    )

    assert first.event_id != second.event_id
    assert first.occurred_at.tzinfo is not None
    assert first.event_type == "token.expiring"
    assert first.reason == "scheduled"


@pytest.mark.parametrize(
    "build",
    [
        lambda: TokenExpiring(
            user_id=uuid.UUID(USER_ID),
            platform="discord",
            token_expires_at=None,
            schema_version=2,  # type: ignore[arg-type]
        ),
        lambda: TokenNeedsReauth(
            user_id=uuid.UUID(USER_ID),
            platform="discord",
            reason="x",
            status="error",  # type: ignore[arg-type]
        ),
    ],
    ids=["schema-version", "status"],
)
def test_models_refuse_invalid_values_at_construction(
    build: Callable[[], Event],
) -> None:
    with pytest.raises(ValidationError):
        build()
