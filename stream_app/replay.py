"""Reading a topic back from a point in time, for audits (``token-refresh replay``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream_app.errors import TokenRefreshError
from stream_app.kafka_client import cap_client_logging, client_options
from stream_app.settings import Settings


async def replay_topic(settings: Settings, topic: str, since: datetime | None, emit: Callable[[str], object]) -> int:
    """Emit every record of ``topic`` from ``since`` (None: the beginning) up to the end
    offsets at the time of the call, one JSON line each, in partition then offset order."""
    cap_client_logging()
    # earliest, as the seek below means: an initial reset to the latest offset can land after
    # a seek to the beginning (aiokafka), which skips every record.
    consumer = AIOKafkaConsumer(enable_auto_commit=False, auto_offset_reset="earliest", **client_options(settings))
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            raise TokenRefreshError(f"topic {topic!r} does not exist")
        # Without a group, a subscription is assigned every partition of the topic.
        consumer.subscribe([topic])
        assigned = await _assignment(consumer)
        ends = await consumer.end_offsets(assigned)
        await _seek(consumer, assigned, since, ends)
        count = 0
        for tp in assigned:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    if record.offset >= ends[tp]:
                        break
                    emit(_as_line(record.value))
                    count += 1
        return count
    finally:
        await consumer.stop()


async def _assignment(consumer: AIOKafkaConsumer) -> list[TopicPartition]:
    try:
        async with asyncio.timeout(30):
            while not consumer.assignment():  # noqa: ASYNC110 - aiokafka has no assignment event
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise TokenRefreshError("no partitions assigned (is the broker healthy?)") from None
    return sorted(consumer.assignment())


async def _seek(
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    since: datetime | None,
    ends: dict[TopicPartition, int],
) -> None:
    if since is None:
        await consumer.seek_to_beginning(*partitions)
        return
    offsets = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in partitions})
    for tp in partitions:
        found = offsets.get(tp)
        consumer.seek(tp, found.offset if found is not None else ends[tp])


def _as_line(value: bytes | None) -> str:
    """The record's JSON as one line; a value that is not JSON is shown as a JSON string."""
    text = (value or b"").decode("utf-8", errors="replace")
    try:
        return json.dumps(json.loads(text), separators=(",", ":"))
    except ValueError:
        return json.dumps(text)
