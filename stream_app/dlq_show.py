"""Showing a dead-letter topic to an operator (``token-refresh dlq show TOPIC``).

One line per dead letter: the record's position, when it was dead-lettered, its key, the reason,
a redacted view of its value (stream_app/redacted_view.py) and its headers' names and value
sizes, opened with the configured keys. The value and the header values are never printed.
Reads without a consumer group: replay positions are untouched.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import ValidationError

from schemas import DeadLetter
from stream_app.errors import TokenRefreshError
from stream_app.kafka_client import cap_client_logging, client_options
from stream_app.redacted_view import redacted_view
from stream_app.sealed_letters import LetterSeal, UnsealError
from stream_app.settings import Settings


async def show_dead_letters(settings: Settings, dlq_topic: str, limit: int | None = None) -> AsyncIterator[str]:
    """A line for each record of ``dlq_topic`` up to its end offsets now (at most ``limit``),
    partition by partition. Raises TokenRefreshError if the topic does not exist."""
    cap_client_logging()
    seal = LetterSeal.from_settings(settings)
    partitions = await _partitions(settings, dlq_topic)
    # earliest, as the seek below means: an initial reset to the latest offset can land after
    # a seek to the beginning (aiokafka), which skips every record.
    consumer = AIOKafkaConsumer(
        group_id=None, enable_auto_commit=False, auto_offset_reset="earliest", **client_options(settings)
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        shown = 0
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                    if record.offset >= ends[tp]:
                        break
                    if limit is not None and shown >= limit:
                        return
                    shown += 1
                    yield describe(record, seal)
    finally:
        await consumer.stop()


def describe(record: ConsumerRecord, seal: LetterSeal) -> str:
    """One DLQ record as a line: position, time, key, reason, value view, headers (tab-separated)."""
    try:
        dead = DeadLetter.model_validate_json(record.value or b"")
    except ValidationError:
        size = len(record.value or b"")
        return f"{record.topic}[{record.partition}]@{record.offset}\tnot a dead letter ({size} bytes)"
    return "\t".join(
        (
            f"{dead.topic}[{dead.partition}]@{dead.offset}",
            dead.occurred_at.isoformat(),
            f"key={json.dumps(dead.key)}",
            f"reason={json.dumps(dead.reason)}",
            f"value={_value_view(dead, seal)}",
            f"headers={_headers_view(dead, seal)}",
        )
    )


def _value_view(dead: DeadLetter, seal: LetterSeal) -> str:
    if dead.value_omitted:
        return f"omitted ({dead.value_size} bytes; read it at its position if still retained)"
    if dead.sealed_key_id is not None:
        try:
            return redacted_view(seal.unseal(dead))
        except UnsealError as exc:
            return f"sealed, not opened: {exc}"
    try:  # a dead letter of an earlier version
        legacy = base64.b64decode(dead.value_base64, validate=True)
    except binascii.Error:
        return "unreadable (value_base64 is not base64)"
    return redacted_view(legacy) + (" (rewritten by an earlier version)" if dead.redacted else "")


def _headers_view(dead: DeadLetter, seal: LetterSeal) -> str:
    """The headers as a JSON list of [name, value size] (null for a null value): names only."""
    if dead.value_omitted:
        return "not kept (read back with the record)"
    if dead.sealed_key_id is None or not dead.sealed_headers:
        return "not kept (a dead letter of an earlier version)"
    try:
        headers = seal.unseal_headers(dead) or []
    except UnsealError as exc:
        return f"sealed, not opened: {exc}"
    return json.dumps([[name, None if value is None else len(value)] for name, value in headers])


async def _partitions(settings: Settings, dlq_topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        topics = {topic["topic"]: topic for topic in await admin.describe_topics()}  # all: never auto-creates
    finally:
        await admin.close()
    if dlq_topic not in topics:
        raise TokenRefreshError(f"topic {dlq_topic!r} does not exist")
    return sorted(TopicPartition(dlq_topic, p["partition"]) for p in topics[dlq_topic]["partitions"])
