"""Provenance of input through the real broker, at the default settings: a future-dated event
is dead-lettered (and the real re-connection after it applied), `manual` requests from the
topic are limited per connection (the API's are not), a wrong signature is refused."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from agents.batch_consumer import refresh_group_id
from schemas import ConnectionCreated, TokenExpiring, sign_event
from stream_app.crypto import generate_key
from tests.integration.conftest import ServiceFactory, Stack
from tests.support.kafka import TopicReader, committed_offset, produce_at

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def _send(stack: Stack, topic: str, event: Any, headers: list[tuple[str, bytes]] | None = None) -> Any:
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        return await producer.send_and_wait(
            stack.topics[topic], event.to_bytes(), key=event.key.encode(), headers=headers or []
        )
    finally:
        await producer.stop()


async def _dead_letter(stack: Stack, topic: str, key: str) -> dict[str, Any]:
    async with TopicReader(stack.bootstrap, [f"{stack.topics[topic]}.dlq"]) as dead:
        return await dead.wait_for(lambda _t, letter: letter.get("key") == key, timeout=60)


async def _access_token_becomes(stack: Stack, user_id: uuid.UUID, platform: str, expected: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        row = await stack.row(user_id, platform)
        if row is not None and stack.cipher.decrypt_column(row, "access_token") == expected:
            return
        assert time.monotonic() < deadline, "the connection never got the expected token"
        await asyncio.sleep(0.2)


async def test_a_future_dated_connection_is_dead_lettered_and_the_real_reconnection_applies(
    stack: Stack, make_service: ServiceFactory
) -> None:
    user_id = uuid.uuid4()
    forged = ConnectionCreated(
        user_id=user_id,
        platform="spotify",
        access_token=stack.cipher.encrypt("forged-access-token"),
        refresh_token=stack.cipher.encrypt("forged-refresh-token"),
        token_expires_at=datetime(2199, 1, 2, tzinfo=UTC),
        occurred_at=datetime(2199, 1, 1, tzinfo=UTC),
    )
    await _send(stack, "connection.created", forged)
    letter = await _dead_letter(stack, "connection.created", forged.key)
    assert letter["reason"].startswith("occurred_at: 2199-01-01") and "EVENT_MAX_CLOCK_SKEW_SECONDS" in letter["reason"]

    grant = stack.sandbox.create_grant("spotify")
    real = ConnectionCreated(
        user_id=user_id,
        platform="spotify",
        access_token=stack.cipher.encrypt(grant["live_access_token"]),
        refresh_token=stack.cipher.encrypt(grant["live_refresh_token"]),
        token_expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    await _send(stack, "connection.created", real)
    await _access_token_becomes(stack, user_id, "spotify", grant["live_access_token"])
    assert await make_service().get_valid_access_token(user_id, "spotify") == grant["live_access_token"]


async def _processed(stack: Stack, sent: Any) -> None:
    """Until the refresh group's committed offset passes ``sent`` (its refresh, if any, done)."""
    tp = TopicPartition(sent.topic, sent.partition)
    group = refresh_group_id(stack.worker.env["KAFKA_APP_ID"])
    deadline = time.monotonic() + 60
    while (committed := await committed_offset(stack.bootstrap, group, tp)) <= sent.offset:
        assert time.monotonic() < deadline, f"committed offset {committed} never passed {sent.offset}"
        await asyncio.sleep(0.2)


async def test_manual_requests_from_the_topic_are_limited_per_connection_the_apis_are_not(
    stack: Stack, make_service: ServiceFactory
) -> None:
    event, grant = stack.connection_event("spotify", expires_in=timedelta(hours=1))  # not due
    assert grant is not None
    await _send(stack, "connection.created", event)
    await _access_token_becomes(stack, event.user_id, "spotify", grant["live_access_token"])
    refreshed = stack.sandbox.state.grant(grant["grant_id"])
    assert refreshed is not None

    for _ in range(3):  # one after the other, each processed before the next is sent
        request = TokenExpiring(user_id=event.user_id, platform="spotify", token_expires_at=None, reason="manual")
        [sent] = await produce_at(
            stack.bootstrap, stack.topics["token.expiring"], [(request.key.encode(), request.to_bytes())]
        )
        await _processed(stack, sent)
    assert refreshed.refresh_count == 1  # the first forced a refresh; the others were downgraded

    service = make_service()
    assert await service.refresh_platform_token(event.user_id, "spotify") is not None
    assert await service.refresh_platform_token(event.user_id, "spotify") is not None
    assert refreshed.refresh_count == 3  # an operator's own manual refreshes are not limited


async def test_a_wrong_signature_is_refused_even_when_none_is_required(stack: Stack) -> None:
    event, _ = stack.connection_event("github", expires_in=None)
    await _send(stack, "connection.created", event, sign_event(event, "someone", generate_key()))
    letter = await _dead_letter(stack, "connection.created", event.key)
    assert letter["reason"] == "signature: unknown producer key id (not in PRODUCER_SIGNING_KEYS)"

    request = TokenExpiring(user_id=event.user_id, platform="github", token_expires_at=None, reason="manual")
    await _send(stack, "token.expiring", request, sign_event(request, "someone", generate_key()))
    letter = await _dead_letter(stack, "token.expiring", request.key)
    assert letter["reason"].startswith("signature: unknown producer key id")
    assert await stack.row(event.user_id, "github") is None
