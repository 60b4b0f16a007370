"""KafkaPublisher.send_many packs records into per-partition batches itself: each key still
lands on the partition every other producer of the key picks (the Java client's default
partitioner), in the order it was given, across batches and calls. Read back from a real
topic."""

from __future__ import annotations

import json
import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner

from stream_app.publisher import MAX_BATCH_BYTES, KafkaPublisher, OutgoingRecord
from stream_app.settings import Settings
from tests.support.kafka import create_topics

pytestmark = pytest.mark.kafka

PARTITIONS = 4


@pytest.fixture
async def topic(kafka_bootstrap: str) -> AsyncIterator[str]:
    name = f"publisher-batches.{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_bootstrap, [name], partitions=PARTITIONS)
    yield name
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([name])
    finally:
        await admin.close()


async def read_back(bootstrap: str, topic: str, count: int) -> list[tuple[int, bytes, int]]:
    """(partition, key, number) of ``count`` records, in offset order per partition."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    seen: list[tuple[int, bytes, int]] = []
    await consumer.start()
    try:
        for _ in range(120):
            for partition, records in (await consumer.getmany(timeout_ms=500)).items():
                for record in records:
                    assert record.key is not None and record.value is not None
                    seen.append((partition.partition, record.key, json.loads(record.value)["n"]))
            if len(seen) >= count:
                break
    finally:
        await consumer.stop()
    assert len(seen) == count
    return seen


async def test_each_key_keeps_its_partition_and_its_order_across_batches_and_calls(
    kafka_bootstrap: str, topic: str, encryption_key: str
) -> None:
    rng = random.Random(11)
    keys = [f"{uuid.uuid4()}:spotify".encode() for _ in range(25)]
    padding = "x" * 1500
    sent: list[OutgoingRecord] = [
        OutgoingRecord(topic, rng.choice(keys), json.dumps({"n": number, "pad": padding}).encode())
        for number in range(4000)
    ]
    # Several full batches per partition in each call.
    assert sum(len(record.value) for record in sent) / 2 / PARTITIONS > 2 * MAX_BATCH_BYTES
    publisher = KafkaPublisher(Settings(encryption_key=encryption_key, kafka_bootstrap_servers=kafka_bootstrap))
    try:
        await publisher.send_many(sent[:2000])
        await publisher.send_many(sent[2000:])
    finally:
        await publisher.stop()

    on_topic = await read_back(kafka_bootstrap, topic, len(sent))
    expected: dict[bytes, list[int]] = defaultdict(list)
    for number, record in enumerate(sent):
        expected[record.key].append(number)
    order: dict[bytes, list[int]] = defaultdict(list)
    for _partition, key, number in on_topic:
        order[key].append(number)
    assert order == expected
    everything = list(range(PARTITIONS))
    default = DefaultPartitioner()
    assert {(key, partition) for partition, key, _ in on_topic} == {
        (key, default(key, everything, everything)) for key in keys
    }
