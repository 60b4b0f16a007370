"""One record can neither stop a partition nor vanish: through the real broker and a real
worker, a record the worker cannot even copy into a dead letter is dead-lettered smaller, the
records behind it are processed, and the consumer group's committed offset moves past it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from sqlalchemy import text

from agents.batch_consumer import refresh_group_id
from stream_app.db import Database
from tests.integration.conftest import Stack
from tests.support.dead_letters import opened
from tests.support.kafka import TopicReader, committed_offset, produce_at

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

BROKER_DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024 + 12
WAIT = 30.0  # a record that blocks its partition shows up as a timeout here, not as a hung run


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
        "token_expires_at": (datetime.now(UTC) + timedelta(hours=6)).isoformat(),
    }
    return event | overrides


def _github(stack: Stack) -> dict[str, object]:
    """A valid connection that needs no provider (a GitHub PAT is never refreshed)."""
    return _connection(platform="github", access_token=stack.cipher.encrypt("ghp_" + uuid.uuid4().hex))


async def _wait_for_rows(stack: Stack, events: list[dict[str, object]]) -> None:
    deadline = time.monotonic() + WAIT
    missing = list(events)
    while missing:
        missing = [e for e in missing if await stack.row(uuid.UUID(str(e["user_id"])), str(e["platform"])) is None]
        if missing and time.monotonic() > deadline:
            raise AssertionError(f"{len(missing)} valid connection(s) not stored within {WAIT}s")
        await asyncio.sleep(0.2)


async def test_a_record_too_large_to_copy_is_dead_lettered_without_its_value_and_ingestion_goes_on(
    stack: Stack, encryption_key: str
) -> None:
    topic = stack.topics["connection.created"]
    # Keys in the service's own shape: a dead letter keeps only those readable.
    big_key, small_key = f"{uuid.uuid4()}:spotify", f"{uuid.uuid4()}:spotify"
    oversized = json.dumps(_connection(platform="myspace", padding="x" * 900_000)).encode()
    nested = b"[" * 2048
    valid = [_github(stack) for _ in range(3)]
    records = [(big_key.encode(), oversized), (small_key.encode(), nested)]
    records += [(f"{event['user_id']}:github".encode(), json.dumps(event).encode()) for event in valid]

    sent = await produce_at(stack.bootstrap, topic, records)

    await _wait_for_rows(stack, valid)  # the records after the poison ones were processed
    async with TopicReader(stack.bootstrap, [f"{topic}.dlq"]) as dead:
        big = await dead.wait_for(lambda _t, r: r.get("key") == big_key, timeout=WAIT)
        small = await dead.wait_for(lambda _t, r: r.get("key") == small_key, timeout=WAIT)

    assert (big["topic"], big["partition"], big["offset"]) == (topic, sent[0].partition, sent[0].offset)
    assert big["value_omitted"] is True and big["value_base64"] == "" and big["value_size"] == len(oversized)
    assert "unknown platform" in big["reason"]
    assert (small["partition"], small["offset"]) == (sent[1].partition, sent[1].offset)
    assert opened(small, encryption_key) == nested and "Invalid JSON" in small["reason"]
    assert stack.worker.process is not None and stack.worker.process.poll() is None


async def test_a_record_the_database_refuses_is_dead_lettered_not_retried_forever(
    stack: Stack, encryption_key: str
) -> None:
    """A record valid by the schema that the database refuses (here: a CHECK constraint the
    operator added, SQLSTATE 23514) would fail the same way for ever if retried, holding every
    record behind it."""
    topic = stack.topics["connection.created"]
    refused = _github(stack) | {"scopes": ["refused-by-the-database"]}
    valid = _github(stack)
    key = f"{refused['user_id']}:github"
    await _administer(
        stack,
        "ALTER TABLE platform_connections ADD CONSTRAINT test_refuses_scope "
        "CHECK (scopes IS NULL OR scopes NOT LIKE '%refused-by-the-database%')",
    )
    try:
        await produce_at(
            stack.bootstrap,
            topic,
            [
                (key.encode(), json.dumps(refused).encode()),
                (f"{valid['user_id']}:github".encode(), json.dumps(valid).encode()),
            ],
        )
        await _wait_for_rows(stack, [valid])
        async with TopicReader(stack.bootstrap, [f"{topic}.dlq"]) as dead:
            letter = await dead.wait_for(lambda _t, r: r.get("key") == key, timeout=WAIT)
    finally:
        await _administer(stack, "ALTER TABLE platform_connections DROP CONSTRAINT test_refuses_scope")
    assert letter["reason"] == "processing error: IntegrityError"
    assert json.loads(opened(letter, encryption_key)) == refused


async def _administer(stack: Stack, statement: str) -> None:
    database = Database(stack.database_url)
    try:
        async with database.transaction() as session:
            await session.execute(text(statement))
    finally:
        await database.dispose()


async def test_a_deeply_nested_refresh_request_is_dead_lettered_and_its_offsetcommitted_offset(
    stack: Stack, encryption_key: str
) -> None:
    topic = stack.topics["token.expiring"]
    key = f"{uuid.uuid4()}:spotify".encode()
    nested = b"[" * 200_000

    [sent] = await produce_at(stack.bootstrap, topic, [(key, nested)])

    async with TopicReader(stack.bootstrap, [f"{topic}.dlq"]) as dead:
        letter = await dead.wait_for(lambda _t, r: r.get("key") == key.decode(), timeout=WAIT)
    assert (letter["topic"], letter["partition"], letter["offset"]) == (topic, sent.partition, sent.offset)
    assert "Invalid JSON" in letter["reason"] and opened(letter, encryption_key) == nested

    # Acked, so committed: the group's offset on that partition moves past the record.
    tp = TopicPartition(topic, sent.partition)
    group = refresh_group_id(stack.worker.env["KAFKA_APP_ID"])  # token.expiring
    deadline = time.monotonic() + WAIT
    while (committed := await committed_offset(stack.bootstrap, group, tp)) <= sent.offset:
        assert time.monotonic() < deadline, f"committed offset {committed} never passed {sent.offset}"
        await asyncio.sleep(0.5)


async def test_a_dead_letter_the_broker_refuses_as_too_large_goes_out_minimal(stack: Stack) -> None:
    """The dead-letter topic may take less than the producer's 1 MiB: the broker's refusal
    (MessageSizeTooLargeError, not retriable) degrades the dead letter, it is not retried forever."""
    topic = stack.topics["token.expiring"]
    await _set_max_message_bytes(stack.bootstrap, f"{topic}.dlq", 20_000)
    try:
        key = f"{uuid.uuid4()}:spotify".encode()
        value = json.dumps({"event_type": "token.expiring", "padding": "x" * 100_000}).encode()
        [sent] = await produce_at(stack.bootstrap, topic, [(key, value)])
        async with TopicReader(stack.bootstrap, [f"{topic}.dlq"]) as dead:
            letter = await dead.wait_for(lambda _t, r: r.get("key") == key.decode(), timeout=WAIT)
    finally:
        await _set_max_message_bytes(stack.bootstrap, f"{topic}.dlq", BROKER_DEFAULT_MAX_MESSAGE_BYTES)
    assert (letter["partition"], letter["offset"]) == (sent.partition, sent.offset)
    assert letter["value_omitted"] is True and letter["value_base64"] == "" and letter["value_size"] == len(value)
    assert "user_id" in letter["reason"] and "MessageSizeTooLargeError" in letter["reason"]


async def _set_max_message_bytes(bootstrap: str, topic: str, limit: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"max.message.bytes": str(limit)}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=config)])
    finally:
        await admin.close()
