"""Input the worker cannot process goes to `<topic>.dlq`, intact and explained; the worker goes on."""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from schemas import TokenExpiring
from stream_app.crypto import TokenCipher, generate_key
from stream_app.db import ConnectionRow, Database
from tests.integration.conftest import Stack
from tests.support.dead_letters import opened
from tests.support.kafka import TopicReader, produce

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def _connection(**overrides: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event_id": str(uuid.uuid4()),
        "event_type": "connection.created",
        "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "user_id": str(uuid.uuid4()),
        "platform": "spotify",
        "access_token": "00" * 12 + ":" + "11" * 16 + ":abcd",
        "refresh_token": None,
        "token_expires_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    }
    return event | overrides


BAD_CONNECTIONS = {
    "not json": (b"{not json", "Invalid JSON"),
    "missing field": (json.dumps({k: v for k, v in _connection().items() if k != "user_id"}).encode(), "user_id"),
    "non-uuid id": (json.dumps(_connection(user_id="user-42")).encode(), "user_id"),
    "unknown platform": (json.dumps(_connection(platform="myspace")).encode(), "unknown platform"),
    "future schema": (json.dumps(_connection(schema_version=2)).encode(), "schema_version"),
    "plaintext token": (json.dumps(_connection(access_token="sbx_at_plaintext_value")).encode(), "access_token"),
    "absurd date": (json.dumps(_connection(token_expires_at="9999-01-01T00:00:00Z")).encode(), "token_expires_at"),
    "wrong key": (
        json.dumps(_connection(access_token=TokenCipher(generate_key()).encrypt("sbx_at_x"))).encode(),
        "access_token",
    ),
}


def _keyed(key: str, _topic: str, letter: dict[str, Any]) -> bool:
    return letter.get("key") == key


async def test_malformed_connections_are_dead_lettered_and_the_worker_goes_on(
    stack: Stack, encryption_key: str
) -> None:
    cases = BAD_CONNECTIONS
    # Keys in the service's own shape: a dead letter keeps only those readable.
    keys = {name: f"{uuid.uuid4()}:spotify".encode() for name in cases}
    await produce(stack.bootstrap, stack.topics["connection.created"], [(keys[n], v) for n, (v, _) in cases.items()])

    dlq = f"{stack.topics['connection.created']}.dlq"
    async with stack.reader("token.refreshed") as reader:
        async with TopicReader(stack.bootstrap, [dlq]) as dead:
            for name, (value, reason_names) in cases.items():
                key = keys[name].decode()
                record = await dead.wait_for(functools.partial(_keyed, key))
                assert record["topic"] == stack.topics["connection.created"]
                assert isinstance(record["partition"], int) and isinstance(record["offset"], int)
                assert opened(record, encryption_key) == value, name  # kept whole, sealed
                assert "sbx_at_plaintext_value" not in json.dumps(record)
                assert reason_names in record["reason"], (name, record["reason"])
                assert "sbx_at_" not in record["reason"]
        # The worker is still consuming: a valid connection published after them is refreshed.
        user_id, _ = await stack.connect("spotify", expires_in=timedelta(minutes=2))
        await reader.wait_for(lambda _t, e: e.get("user_id") == str(user_id))
    assert stack.worker.process is not None and stack.worker.process.poll() is None


async def test_malformed_refresh_request_is_dead_lettered(stack: Stack, encryption_key: str) -> None:
    key = f"{uuid.uuid4()}:spotify".encode()
    value = json.dumps({"event_type": "token.expiring", "user_id": str(uuid.uuid4())}).encode()
    await produce(stack.bootstrap, stack.topics["token.expiring"], [(key, value)])
    async with TopicReader(stack.bootstrap, [f"{stack.topics['token.expiring']}.dlq"]) as dead:
        record = await dead.wait_for(lambda _t, r: r.get("key") == key.decode())
    assert opened(record, encryption_key) == value
    assert "platform" in record["reason"]


async def test_a_duplicate_event_is_recognised_and_has_one_effect_without_a_dead_letter(stack: Stack) -> None:
    event, grant = stack.connection_event("spotify", expires_in=timedelta(minutes=2))
    assert grant is not None
    record = (event.key.encode(), event.to_bytes())
    async with (
        stack.reader("token.refreshed") as reader,
        TopicReader(stack.bootstrap, [f"{stack.topics['connection.created']}.dlq"]) as dead,
    ):
        await produce(stack.bootstrap, stack.topics["connection.created"], [record, record])
        await reader.wait_for(lambda _t, e: e.get("user_id") == str(event.user_id), timeout=60)
        await produce(stack.bootstrap, stack.topics["connection.created"], [record])  # a replay, later
        await asyncio.sleep(3)
        await reader.drain(1)
        await dead.drain(1)
    assert len([r for r in reader.records if str(event.user_id).encode() in (r[2] or b"")]) == 1
    assert not [r for r in dead.records if str(event.user_id).encode() in (r[1] or b"")]
    refreshed = stack.sandbox.state.grant(grant["grant_id"])
    assert refreshed is not None and refreshed.refresh_count == 1
    assert str(event.event_id) in stack.worker.log() and "duplicate" in stack.worker.log()


@pytest.mark.parametrize("tamper", ["flip", "truncate", "other_key"])
async def test_a_tampered_stored_token_marks_the_connection_error_and_keeps_the_request(
    stack: Stack, tamper: str
) -> None:
    user_id, _grant = await stack.connect("spotify", expires_in=timedelta(hours=6))
    row = await stack.stored_row(user_id, "spotify")
    assert row.refresh_token is not None
    stored = row.refresh_token
    tampered = {
        "flip": stored[:-1] + ("0" if stored[-1] != "0" else "1"),
        "truncate": stored[:-8],
        # Sealed under another key but naming the configured one: tampering, not a missing key
        # (a key id this worker lacks defers instead: test_key_deploy*.py).
        "other_key": f"v2:{stack.cipher.current_key_id}:"
        + TokenCipher(generate_key()).encrypt_column(row, "refresh_token", "sbx_rt_x").split(":", 2)[2],
    }[tamper]
    database = Database(stack.database_url)
    try:
        async with database.transaction() as session:
            await session.execute(
                update(ConnectionRow).where(ConnectionRow.id == row.id).values(refresh_token=tampered)
            )
    finally:
        await database.dispose()

    request = TokenExpiring(user_id=user_id, platform="spotify", token_expires_at=None, reason="manual")
    async with (
        stack.reader("token.refresh_failed") as failed,
        TopicReader(stack.bootstrap, [f"{stack.topics['token.expiring']}.dlq"]) as dead,
    ):
        await produce(stack.bootstrap, stack.topics["token.expiring"], [(request.key.encode(), request.to_bytes())])
        event = await failed.wait_for(lambda _t, e: e.get("user_id") == str(user_id), timeout=60)
        letter = await dead.wait_for(lambda _t, r: r.get("key") == request.key, timeout=60)

    assert event["error_class"] == "decryption_error" and event["status"] == "error" and not event["will_retry"]
    assert "cannot be decrypted" in letter["reason"]
    after = await stack.row(user_id, "spotify")
    assert after is not None and after.status == "error"
    assert any(why in (after.last_sync_error or "") for why in ("failed authentication", "not configured"))
    assert stack.worker.process is not None and stack.worker.process.poll() is None
