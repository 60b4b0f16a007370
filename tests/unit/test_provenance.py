"""What stream_app.provenance refuses, accepts and downgrades (the broker tests are in
tests/integration/test_provenance*.py)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
from faust.types import EventT

from schemas import ConnectionCreated, TokenExpiring, encrypt_bound_token, sign_event
from stream_app.crypto import TokenCipher, generate_key
from stream_app.ingest import InvalidEvent
from stream_app.provenance import Provenance, RequestAdmission
from stream_app.settings import Settings, load_settings

KEY = generate_key()
SECRET_A = "a1" + generate_key()[2:]
SECRET_B = generate_key()


def _settings(**overrides: Any) -> Settings:
    return load_settings(encryption_key=KEY, **overrides)


SIGNED = {"producer_signing_keys": f"producer-a:{SECRET_A},producer-b:{SECRET_B}"}


def _record(raw: bytes, headers: list[tuple[str, bytes]] | None = None) -> EventT[bytes]:
    return cast(EventT[bytes], SimpleNamespace(value=raw, message=SimpleNamespace(headers=headers or [])))


def _connection(**overrides: Any) -> ConnectionCreated:
    values: dict[str, Any] = {
        "user_id": uuid.uuid4(),
        "platform": "spotify",
        "access_token": TokenCipher(KEY).encrypt("at"),
        "refresh_token": None,
        "token_expires_at": None,
    }
    return ConnectionCreated(**(values | overrides))


def _check(provenance: Provenance, event: ConnectionCreated, headers: list[tuple[str, bytes]] | None = None) -> None:
    provenance.check_connection(event, _record(event.to_bytes(), headers))


@pytest.mark.parametrize("topic", ["connection.created", "token.expiring"])
def test_an_event_dated_beyond_the_skew_is_refused_naming_the_field(topic: str) -> None:
    provenance = Provenance(_settings(event_max_clock_skew_seconds=120))
    soon, late = datetime.now(UTC) + timedelta(seconds=100), datetime.now(UTC) + timedelta(seconds=200)
    if topic == "connection.created":
        _check(provenance, _connection(occurred_at=soon))
        with pytest.raises(InvalidEvent, match=r"^occurred_at: .* EVENT_MAX_CLOCK_SKEW_SECONDS \(120 s\)"):
            _check(provenance, _connection(occurred_at=late))
    else:
        request = TokenExpiring(user_id=uuid.uuid4(), platform="x", token_expires_at=None, occurred_at=late)
        with pytest.raises(InvalidEvent, match=r"^occurred_at: "):
            provenance.check_request(request, _record(request.to_bytes()))


def test_signatures_under_each_configured_key_are_accepted_in_any_json_formatting() -> None:
    provenance = Provenance(_settings(**SIGNED, require_signed_connection_events=True))
    for key_id, secret in (("producer-a", SECRET_A), ("producer-b", SECRET_B)):
        event = _connection()
        _check(provenance, event, sign_event(event, key_id, secret))
        reformatted = json.dumps(dict(reversed(json.loads(event.to_bytes()).items())), indent=1).encode()
        provenance.check_connection(event, _record(reformatted, sign_event(event, key_id, secret)))


@pytest.mark.parametrize("required", [True, False])
def test_wrong_signatures_are_refused_whether_or_not_signatures_are_required(required: bool) -> None:
    provenance = Provenance(_settings(**SIGNED, require_signed_connection_events=required))
    event = _connection()
    other = _connection()
    good = sign_event(event, "producer-a", SECRET_A)
    cases = {
        "does not match": sign_event(event, "producer-a", SECRET_B),
        "does not match ": sign_event(other, "producer-a", SECRET_A),  # another event's signature
        "unknown producer key id": sign_event(event, "producer-c", SECRET_A),
        "exactly one": [*good, good[1]],
        "exactly one ": good[:1],
    }
    for reason, headers in cases.items():
        with pytest.raises(InvalidEvent, match=f"^signature: .*{reason.strip()}"):
            _check(provenance, event, headers)
    tampered = json.loads(event.to_bytes()) | {"user_id": str(uuid.uuid4())}
    with pytest.raises(InvalidEvent, match=r"^signature: does not match"):
        provenance.check_connection(event, _record(json.dumps(tampered).encode(), good))


def test_a_value_without_canonical_form_is_refused() -> None:
    provenance = Provenance(_settings(**SIGNED))
    event = _connection()
    raw = event.to_bytes()[:-1] + b',"extra":1.5}'
    with pytest.raises(InvalidEvent, match=r"^signature: the value has no canonical form"):
        provenance.check_connection(event, _record(raw, sign_event(event, "producer-a", SECRET_A)))


def test_unsigned_events_are_refused_only_when_required() -> None:
    _check(Provenance(_settings(**SIGNED)), _connection())
    with pytest.raises(InvalidEvent, match=r"^signature: unsigned .*REQUIRE_SIGNED_CONNECTION_EVENTS"):
        _check(Provenance(_settings(**SIGNED, require_signed_connection_events=True)), _connection())


def test_a_present_signature_on_a_refresh_request_is_checked() -> None:
    provenance = Provenance(_settings(**SIGNED))
    request = TokenExpiring(user_id=uuid.uuid4(), platform="x", token_expires_at=None)
    provenance.check_request(request, _record(request.to_bytes()))
    provenance.check_request(request, _record(request.to_bytes(), sign_event(request, "producer-b", SECRET_B)))
    with pytest.raises(InvalidEvent, match=r"^signature: does not match"):
        provenance.check_request(request, _record(request.to_bytes(), sign_event(request, "producer-b", SECRET_A)))


def test_seed_format_tokens_are_refused_when_bound_ones_are_required() -> None:
    required = Provenance(_settings(require_bound_input_tokens=True))
    user_id = uuid.uuid4()
    bound = encrypt_bound_token("at", KEY, user_id, "spotify", "access_token")
    _check(required, _connection(user_id=user_id, access_token=bound))
    _check(Provenance(_settings()), _connection())  # not required: the seed's format is read
    with pytest.raises(InvalidEvent, match=r"^access_token: an unbound \(seed-format\) ciphertext"):
        _check(required, _connection())
    with pytest.raises(InvalidEvent, match=r"^refresh_token: an unbound"):
        _check(required, _connection(user_id=user_id, access_token=bound, refresh_token=TokenCipher(KEY).encrypt("rt")))


def test_schedule_skipping_requests_over_the_limit_are_downgraded_to_scheduled() -> None:
    admission = RequestAdmission(_settings(manual_refresh_min_interval_seconds=60))
    user_id = uuid.uuid4()

    def admit(reason: str, user: uuid.UUID = user_id) -> str:
        request = TokenExpiring(user_id=user, platform="x", token_expires_at=None, reason=reason)
        admitted = admission.admit(request, _record(request.to_bytes()))
        assert isinstance(admitted, TokenExpiring) and admitted.event_id == request.event_id
        return admitted.reason

    assert admit("manual") == "manual"
    assert [admit("manual"), admit("on_demand")] == ["scheduled", "scheduled"]
    assert admit("scheduled") == "scheduled" and admit("bulk") == "bulk"
    other = uuid.uuid4()
    assert [admit("on_demand", other), admit("manual", other)] == ["on_demand", "scheduled"]
    refused = InvalidEvent("user_id: bad")
    assert admission.admit(refused, _record(b"")) is refused
    late = TokenExpiring(
        user_id=user_id, platform="x", token_expires_at=None, occurred_at=datetime(2199, 1, 1, tzinfo=UTC)
    )
    assert isinstance(admission.admit(late, _record(late.to_bytes())), InvalidEvent)
