"""Small aiokafka helpers for tests: topics, producing, and waiting for records."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.structs import RecordMetadata


async def create_topics(bootstrap: str, names: list[str], partitions: int = 4) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for name in names:
            try:
                await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> float:
    """As a producer of the service's input would (idempotent, acks=all); returns the wall-clock
    time just before the first send (a benchmark's start)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        started = time.time()
        sent = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return started


class TopicReader:
    """Reads topics from the beginning, keeping everything seen (for later leak searches)."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self._consumer = AIOKafkaConsumer(
            *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
        )
        self.records: list[tuple[str, bytes | None, bytes | None]] = []

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def wait_for(self, predicate: Callable[[str, dict[str, Any]], bool], timeout: float = 60.0) -> dict[str, Any]:
        """The first JSON record (topic, value) matching ``predicate``, seen or yet to come."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for topic, _key, value in self.records[checked:]:
                decoded = _json(value)
                if decoded is not None and predicate(topic, decoded):
                    return decoded
            checked = len(self.records)
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching record within {timeout}s ({len(self.records)} seen)")
            await self._poll(500)

    async def _poll(self, timeout_ms: int) -> None:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms)
        for records in batches.values():
            self.records.extend((record.topic, record.key, record.value) for record in records)

    async def drain(self, seconds: float) -> None:
        """Keep reading for ``seconds`` (to show that something did NOT happen)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await self._poll(200)


async def produce_at(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> list[RecordMetadata]:
    """Produce in order and return where each record landed."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        return [await producer.send_and_wait(topic, value, key=key) for key, value in records]
    finally:
        await producer.stop()


async def committed_offset(bootstrap: str, group: str, tp: TopicPartition) -> int:
    """The consumer group's committed offset on ``tp`` (-1: none yet)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
    finally:
        await admin.close()
    found = offsets.get(tp)
    return found.offset if found is not None else -1


async def uncommitted(bootstrap: str, group: str, topic: str) -> tuple[int, int]:
    """(records on ``topic``, those of them ``group`` has not committed past)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    committed = [max(0, await committed_offset(bootstrap, group, tp)) for tp in partitions]
    return sum(ends.values()), sum(ends.values()) - sum(committed)


def _json(value: bytes | None) -> dict[str, Any] | None:
    try:
        decoded = json.loads(value or b"")
    except ValueError:
        return None
    return decoded if isinstance(decoded, dict) else None
