"""The run's topics: publishing connection.created, reading everything back, group offsets."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas import ConnectionCreated
from tests.support.kafka import produce

from .figures import Record


async def publish(bootstrap: str, topic: str, events: list[ConnectionCreated]) -> float:
    """Keyed by connection, as a producer would; returns the wall-clock time just before the first send."""
    return await produce(bootstrap, topic, [(event.key.encode(), event.to_bytes()) for event in events])


async def partitions_of(bootstrap: str, topics: list[str]) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    partitions = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
    if {tp.topic for tp in partitions} != set(topics):
        raise RuntimeError(f"some of {topics} are unknown to the broker")
    return sorted(partitions)


async def end_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    partitions = await partitions_of(bootstrap, topics)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}
    finally:
        await admin.close()


async def group_offsets(
    bootstrap: str, groups: list[str], topics: list[str], timeout: float
) -> dict[tuple[str, int], tuple[int, int]]:
    """(committed, end) per partition: the end offsets now, and the committed offsets of the
    groups that read them (each topic is read by one) once they reach them (or when
    ``timeout`` runs out)."""
    ends = await end_offsets(bootstrap, topics)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        committed: dict[tuple[str, int], int] = {}
        for group in groups:
            committed |= await committed_offsets(bootstrap, group)
        result = {tp: (committed.get(tp, 0), end) for tp, end in ends.items()}
        if all(c >= e for c, e in result.values()) or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(2)


async def read_all(bootstrap: str, topics: list[str]) -> list[Record]:
    """Every record of ``topics`` from the beginning up to their end offsets now."""
    ends = await end_offsets(bootstrap, topics)
    wanted = {TopicPartition(t, p): end for (t, p), end in ends.items() if end > 0}
    records: list[Record] = []
    if not wanted:
        return records
    # earliest, as the seek below: a "latest" initial reset can land after it (aiokafka) and
    # the figures would miss records.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
    )
    await consumer.start()
    try:
        consumer.assign(list(wanted))
        await consumer.seek_to_beginning(*wanted)
        remaining = dict(wanted)
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, batch in batches.items():
                records.extend(Record(r.topic, r.partition, r.offset, r.key, r.value) for r in batch)
                if batch and batch[-1].offset + 1 >= remaining.get(tp, 0):
                    remaining.pop(tp, None)
            for tp in list(remaining):
                with contextlib.suppress(Exception):
                    if await consumer.position(tp) >= remaining[tp]:
                        remaining.pop(tp)
    finally:
        await consumer.stop()
    return records
