"""Input the worker cannot process goes to `<topic>.dlq`, intact and explained; the worker goes on."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from stream_app.crypto import TokenCipher, generate_key
from tests.integration.conftest import Stack
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


async def test_malformed_connections_are_dead_lettered_and_the_worker_goes_on(stack: Stack) -> None:
    cases = BAD_CONNECTIONS
    keys = {name: f"bad-{index}-{uuid.uuid4().hex[:6]}".encode() for index, name in enumerate(cases)}
    await produce(stack.bootstrap, stack.topics["connection.created"], [(keys[n], v) for n, (v, _) in cases.items()])

    dlq = f"{stack.topics['connection.created']}.dlq"
    async with stack.reader("token.refreshed") as reader:
        async with TopicReader(stack.bootstrap, [dlq]) as dead:
            for name, (value, reason_names) in cases.items():
                key = keys[name].decode()
                record = await dead.wait_for(lambda _t, r, key=key: r.get("key") == key)
                assert record["topic"] == stack.topics["connection.created"]
                assert isinstance(record["partition"], int) and isinstance(record["offset"], int)
                assert base64.b64decode(record["value_base64"]) == value, name
                assert reason_names in record["reason"], (name, record["reason"])
                assert "sbx_at_" not in record["reason"]
        # The worker is still consuming: a valid connection published after them is refreshed.
        user_id, _ = await stack.connect("spotify", expires_in=timedelta(minutes=2))
        await reader.wait_for(lambda _t, e: e.get("user_id") == str(user_id))
    assert stack.worker.process is not None and stack.worker.process.poll() is None


async def test_malformed_refresh_request_is_dead_lettered(stack: Stack) -> None:
    key = f"bad-expiring-{uuid.uuid4().hex[:6]}".encode()
    value = json.dumps({"event_type": "token.expiring", "user_id": str(uuid.uuid4())}).encode()
    await produce(stack.bootstrap, stack.topics["token.expiring"], [(key, value)])
    async with TopicReader(stack.bootstrap, [f"{stack.topics['token.expiring']}.dlq"]) as dead:
        record = await dead.wait_for(lambda _t, r: r.get("key") == key.decode())
    assert base64.b64decode(record["value_base64"]) == value
    assert "platform" in record["reason"]
