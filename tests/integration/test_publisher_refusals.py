"""A record the broker refuses for good (over the topic's max.message.bytes) must not break the
producer for the records after it. An idempotent producer numbers each partition's batches;
the refused batch used a number the broker never recorded, so every later batch of that
partition was refused as out of order and aiokafka's sender stopped for good: the dead letter
of the next poison record, and everything else the worker publishes, waited forever."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import MessageSizeTooLargeError

from stream_app.publisher import KafkaPublisher, OutgoingRecord
from stream_app.settings import load_settings

pytestmark = pytest.mark.kafka

LIMIT = 20_000


@pytest.fixture
async def small_topic(kafka_bootstrap: str) -> AsyncIterator[str]:
    """One partition that takes records of at most LIMIT bytes (the producer allows 1 MiB)."""
    name = f"publisher-refusals.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        topic = NewTopic(name, num_partitions=1, replication_factor=1, topic_configs={"max.message.bytes": str(LIMIT)})
        await admin.create_topics([topic])
        yield name
        await admin.delete_topics([name])
    finally:
        await admin.close()


async def _values(bootstrap: str, topic: str, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        values: list[bytes] = []
        async with asyncio.timeout(30):
            while len(values) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    values.extend(record.value for record in records)
        return values
    finally:
        await consumer.stop()


async def test_dead_letters_after_one_the_broker_refused_still_go_out(
    kafka_bootstrap: str, small_topic: str, encryption_key: str
) -> None:
    publisher = KafkaPublisher(load_settings(encryption_key=encryption_key, kafka_bootstrap_servers=kafka_bootstrap))
    try:
        await publisher.send(small_topic, b"k", b"before")
        with pytest.raises(MessageSizeTooLargeError):
            await publisher.send(small_topic, b"k", b"x" * (LIMIT * 2))
        async with asyncio.timeout(30):  # forever, before: refused as out of order
            await publisher.send(small_topic, b"k", b"after")
    finally:
        await publisher.stop()
    assert await _values(kafka_bootstrap, small_topic, 2) == [b"before", b"after"]


async def test_outcomes_after_a_batch_the_broker_refused_still_go_out(
    kafka_bootstrap: str, small_topic: str, encryption_key: str
) -> None:
    """The idempotent producer of outcome events: a refused batch (its records are the caller's
    to retry, as the relay does) leaves the next batches of the partition sendable."""
    publisher = KafkaPublisher(load_settings(encryption_key=encryption_key, kafka_bootstrap_servers=kafka_bootstrap))
    try:
        await publisher.send_many([OutgoingRecord(small_topic, b"k", b"before")])
        with pytest.raises(MessageSizeTooLargeError):
            await publisher.send_many([OutgoingRecord(small_topic, b"k", b"y" * (LIMIT * 2))])
        async with asyncio.timeout(30):
            await publisher.send_many([OutgoingRecord(small_topic, b"k", b"after")])  # out of order, before
    finally:
        await publisher.stop()
    assert await _values(kafka_bootstrap, small_topic, 2) == [b"before", b"after"]


async def test_records_sent_alongside_a_refused_one_are_not_refused_with_it(
    kafka_bootstrap: str, small_topic: str, encryption_key: str
) -> None:
    """The broker refuses a whole batch over the topic's limit: the dead letters that lingered
    with the one too large go out again, each in a batch of its own."""
    publisher = KafkaPublisher(load_settings(encryption_key=encryption_key, kafka_bootstrap_servers=kafka_bootstrap))
    try:
        await publisher.send(small_topic, b"k", b"warm")
        async with asyncio.timeout(30):
            outcomes = await asyncio.gather(
                publisher.send(small_topic, b"k", b"x" * (LIMIT * 2)),
                *(publisher.send(small_topic, b"k", f"sibling {n}".encode()) for n in range(20)),
                return_exceptions=True,
            )
    finally:
        await publisher.stop()
    assert isinstance(outcomes[0], MessageSizeTooLargeError)
    assert [o for o in outcomes[1:] if o is not None] == []
    siblings = sorted(v for v in await _values(kafka_bootstrap, small_topic, 21) if v.startswith(b"sibling"))
    assert siblings == sorted(f"sibling {n}".encode() for n in range(20))
