"""Signatures and row-bound ciphertexts required, through the real broker: unsigned, mis-signed,
unknown-key and seed-format `connection.created` are dead-lettered with their reason; events
signed under either of two producer keys are stored, Node's (the documented snippets) included."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from schemas import ConnectionCreated, encrypt_bound_token, sign_event
from stream_app.crypto import generate_key
from tests.integration.conftest import Stack
from tests.support.kafka import TopicReader
from tests.support.node_snippets import run_node
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

KEYS = {"producer-a": generate_key(), "producer-b": generate_key()}


@pytest.fixture(scope="module")
def required(stack: Stack) -> Iterator[Stack]:
    """The module's stack, its worker restarted with signatures and bound tokens required."""
    stack.worker.stop()
    env = {
        **stack.worker.env,
        "PRODUCER_SIGNING_KEYS": ",".join(f"{key_id}:{secret}" for key_id, secret in KEYS.items()),
        "REQUIRE_SIGNED_CONNECTION_EVENTS": "true",
        "REQUIRE_BOUND_INPUT_TOKENS": "true",
    }
    stack.worker = WorkerProcess(env, stack.worker.log_path.with_name("worker-required.log")).start()
    stack.worker.wait_ready(90)
    yield stack


def _bound_event(stack: Stack, key_hex: str) -> tuple[ConnectionCreated, dict[str, Any]]:
    grant = stack.sandbox.create_grant("spotify")
    user_id = uuid.uuid4()
    event = ConnectionCreated(
        user_id=user_id,
        platform="spotify",
        access_token=encrypt_bound_token(grant["live_access_token"], key_hex, user_id, "spotify", "access_token"),
        refresh_token=encrypt_bound_token(grant["live_refresh_token"], key_hex, user_id, "spotify", "refresh_token"),
        token_expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    return event, grant


async def _send(stack: Stack, records: list[tuple[str, bytes, list[tuple[str, bytes]]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(stack.topics["connection.created"], value, key=key.encode(), headers=headers)
    finally:
        await producer.stop()


async def _stored(stack: Stack, user_id: uuid.UUID, access_token: str) -> None:
    deadline = time.monotonic() + 60
    while (row := await stack.row(user_id, "spotify")) is None:
        assert time.monotonic() < deadline, "the connection was never stored"
        await asyncio.sleep(0.2)
    assert stack.cipher.decrypt_column(row, "access_token") == access_token


def _keyed(key: str, _topic: str, letter: dict[str, Any]) -> bool:
    return letter.get("key") == key


async def test_unsigned_mis_signed_and_unbound_events_are_dead_lettered(required: Stack, encryption_key: str) -> None:
    stack = required
    cases: dict[str, tuple[ConnectionCreated, list[tuple[str, bytes]]]] = {}
    event, _ = _bound_event(stack, encryption_key)
    cases["signature: unsigned (no signature-key-id / signature header)"] = (event, [])
    event, _ = _bound_event(stack, encryption_key)
    cases["signature: does not match the event under its producer key"] = (
        event,
        sign_event(event, "producer-a", KEYS["producer-b"]),
    )
    event, _ = _bound_event(stack, encryption_key)
    cases["signature: unknown producer key id (not in PRODUCER_SIGNING_KEYS)"] = (
        event,
        sign_event(event, "producer-c", KEYS["producer-a"]),
    )
    seed, _ = stack.connection_event("spotify", expires_in=timedelta(hours=1))  # the seed's format
    cases["access_token: an unbound (seed-format) ciphertext"] = (
        seed,
        sign_event(seed, "producer-a", KEYS["producer-a"]),
    )

    async with TopicReader(stack.bootstrap, [f"{stack.topics['connection.created']}.dlq"]) as dead:
        await _send(stack, [(event.key, event.to_bytes(), headers) for event, headers in cases.values()])
        for reason, (event, _) in cases.items():
            letter = await dead.wait_for(functools.partial(_keyed, event.key), timeout=60)
            assert letter["reason"].startswith(reason)
    for event, _ in cases.values():
        assert await stack.row(event.user_id, "spotify") is None


async def test_events_signed_under_either_key_are_stored(required: Stack, encryption_key: str) -> None:
    stack = required
    signed = []
    for key_id, secret in KEYS.items():  # a rotation: both keys accepted at once
        event, grant = _bound_event(stack, encryption_key)
        signed.append((event, grant))
        await _send(stack, [(event.key, event.to_bytes(), sign_event(event, key_id, secret))])
    for event, grant in signed:
        await _stored(stack, event.user_id, grant["live_access_token"])


async def test_a_node_producer_following_the_docs_is_believed(required: Stack, encryption_key: str) -> None:
    stack = required
    grant = stack.sandbox.create_grant("spotify")
    user_id = uuid.uuid4()
    template = ConnectionCreated(
        user_id=user_id,
        platform="spotify",
        access_token="00" * 12 + ":" + "00" * 16 + ":",  # replaced by Node's
        refresh_token=None,
        token_expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    produced = run_node(
        ["encrypt-bound-token", "sign-event"],
        """
        const e = input.event;
        e.access_token = encryptBoundToken(input.access, input.key, e.user_id, e.platform, 'access_token');
        e.refresh_token = encryptBoundToken(input.refresh, input.key, e.user_id, e.platform, 'refresh_token');
        console.log(JSON.stringify(signEvent(e, 'producer-b', input.secret)));
        """,
        {
            "event": template.model_dump(mode="json"),
            "access": grant["live_access_token"],
            "refresh": grant["live_refresh_token"],
            "key": encryption_key,
            "secret": KEYS["producer-b"],
        },
    )
    headers = [(name, value.encode()) for name, value in produced["headers"].items()]
    await _send(stack, [(template.key, produced["value"].encode(), headers)])
    await _stored(stack, user_id, grant["live_access_token"])
    row = await stack.row(user_id, "spotify")
    assert row is not None and stack.cipher.decrypt_column(row, "refresh_token") == grant["live_refresh_token"]
