"""How the notifier reads each topic's records, and what it refuses (without echoing values)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from schemas import ConnectionCreated, ProviderCircuitChanged, TokenRefreshFailed, TokenRevoked
from stream_app.notify.dead_letters import DeadLetters, readable_key
from stream_app.notify.intake import Malformed, read_record
from stream_app.notify.notice import Notice

CIPHERTEXT = "ab" * 12 + ":" + "cd" * 16 + ":" + "ef" * 24


def test_connection_created_is_a_recovery_signal_whose_ciphertexts_are_not_kept() -> None:
    event = ConnectionCreated(
        user_id=uuid.uuid4(),
        platform="spotify",
        access_token=CIPHERTEXT,
        refresh_token=CIPHERTEXT,
        token_expires_at=None,
    )
    received = read_record("connection.created", event.to_bytes())
    assert received.recovers and not received.told and not received.problem
    assert CIPHERTEXT not in json.dumps(received.notice.event)
    assert set(received.notice.event) == {
        "event_id",
        "event_type",
        "schema_version",
        "occurred_at",
        "user_id",
        "platform",
    }


@pytest.mark.parametrize(("will_retry", "problem"), [(True, False), (False, True)])
def test_a_refresh_failure_is_a_problem_only_when_it_will_not_be_retried(will_retry: bool, problem: bool) -> None:
    event = TokenRefreshFailed(
        user_id=uuid.uuid4(), platform="github", error_class="server_error", status="error", will_retry=will_retry
    )
    received = read_record("token.refresh_failed", event.to_bytes())
    assert received.notice.kind == "refresh_failed" and received.problem is problem and received.told


def test_revocations_and_circuits() -> None:
    revoked = TokenRevoked(
        user_id=uuid.uuid4(),
        platform="x",
        reason="security",
        revocation="failed",
        tokens_wiped=False,
        disconnect_event_id=uuid.uuid4(),
    )
    received = read_record("token.revoked", revoked.to_bytes())
    assert received.revokes and received.notice.kind == "revoked"
    circuit = ProviderCircuitChanged(platform="spotify", state="open", worker="w1", cool_down_seconds=60)
    received = read_record("provider.circuit_changed", circuit.to_bytes())
    assert received.notice.kind == "circuit_opened" and received.notice.user_id is None
    assert received.notice.notice_id == circuit.event_id


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "no value (a tombstone)"),
        (b"\xff\xfe", "not JSON: "),
        (b"[1, 2]", "not a JSON object but list"),
        (b'{"event_type": "token.needs_reauth", "reason": "ya29.SECRET"}', "not a token.needs_reauth event: "),
        (b"[" * 100_000, "not JSON this notifier reads: nested too deeply"),
    ],
)
def test_a_malformed_record_is_refused_with_a_reason_that_quotes_nothing(value: bytes | None, reason: str) -> None:
    with pytest.raises(Malformed) as raised:
        read_record("token.needs_reauth", value)
    assert str(raised.value).startswith(reason)
    assert "SECRET" not in str(raised.value)


def test_only_keys_of_the_services_shapes_stay_readable() -> None:
    user = uuid.uuid4()
    assert readable_key(f"{user}:spotify".encode()) == f"{user}:spotify"
    assert readable_key(b"spotify") == "spotify"
    assert readable_key(b"ya29.some-token") is None and readable_key(b"\xff") is None and readable_key(None) is None


def test_a_connection_created_of_another_type_is_refused_without_quoting_it() -> None:
    value = json.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "ya29.SECRET" + "\\" * 1000,
            "occurred_at": "2026-11-30T12:00:00Z",
            "user_id": str(uuid.uuid4()),
            "platform": "spotify",
        }
    ).encode()
    with pytest.raises(Malformed) as raised:
        read_record("connection.created", value)
    assert "SECRET" not in str(raised.value) and len(str(raised.value)) < 100


async def test_a_dead_letter_of_an_event_with_a_lone_surrogate_is_still_written() -> None:
    sent: list[tuple[str, bytes, bytes | None]] = []

    class Producer:
        async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None) -> None:
            sent.append((topic, value, key))

    user = uuid.uuid4()
    notice = Notice(uuid.uuid4(), "needs_reauth", "spotify", user, datetime.now(UTC), {"reason": "invalid\ud800"})
    await DeadLetters(Producer(), "notify.dlq").deliveries(  # type: ignore[arg-type]
        [notice], channel="webhook", attempts=1, reason="webhook answered HTTP 410"
    )
    ((topic, value, key),) = sent
    letter = json.loads(value)
    assert topic == "notify.dlq" and key == f"{user}:spotify".encode()
    assert letter["event"] == {"reason": "invalid?"} and letter["reason"] == "webhook answered HTTP 410"
