"""Replaying a dead-letter topic after a fix (``token-refresh dlq replay TOPIC``).

Each DLQ record's original bytes go back, under their original key, to the topic they came
from. The position in the DLQ is kept by a consumer group of its own and committed once a
batch is acknowledged by the broker, so a later run replays only what arrived since, and a
crash re-sends at most one batch (which the service tolerates: a `connection.created` no newer
than its row is ignored, a repeated refresh request finds the token fresh). Replayed records
arrive after newer events of the same connection; the same rules keep that harmless.

Record values may carry (encrypted) tokens: nothing here logs them, only positions and reasons.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from schemas import DeadLetter
from stream_app.errors import TokenRefreshError
from stream_app.kafka_client import cap_client_logging, client_options, idempotent_producer
from stream_app.settings import Settings

log = logging.getLogger(__name__)

DLQ_SUFFIX = ".dlq"
BATCH_SIZE = 500


@dataclass(frozen=True)
class ReplayEntry:
    """Where a dead-lettered record came from, and why it failed."""

    topic: str
    partition: int
    offset: int
    reason: str


@dataclass
class ReplayReport:
    """``replayed`` counts what was re-produced (in a dry run: what would be, listed in ``entries``)."""

    dry_run: bool = False
    replayed: int = 0
    skipped_unreadable: int = 0
    skipped_foreign: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    entries: list[ReplayEntry] = field(default_factory=list)

    @property
    def processed(self) -> int:
        return self.replayed + self.skipped_unreadable + self.skipped_foreign


def replay_group(settings: Settings) -> str:
    """The consumer group that keeps the replay position of every DLQ."""
    return f"{settings.kafka_app_id}-dlq-replay"


async def replay_dead_letters(
    settings: Settings,
    dlq_topic: str,
    *,
    dry_run: bool = False,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Re-produce the records of ``dlq_topic`` that arrived since the last run, up to its end
    offsets at the time of the call, to their original topic.

    ``limit`` caps the DLQ records handled (skipped ones included); ``progress(done, total)`` is
    called at the start and after each batch. A dry run sends and commits nothing. Raises
    TokenRefreshError (one line) if a topic is missing or Kafka fails; a rerun resumes."""
    if not dlq_topic.endswith(DLQ_SUFFIX):
        raise TokenRefreshError(f"{dlq_topic!r} is not a dead-letter topic (its name must end in {DLQ_SUFFIX!r})")
    if limit is not None and limit < 0:
        raise ValueError("limit must not be negative")
    report = ReplayReport(dry_run=dry_run)
    cap_client_logging()
    try:
        await _replay(settings, dlq_topic, limit, progress, report)
    except KafkaError as exc:
        raise TokenRefreshError(
            f"DLQ replay of {dlq_topic!r} failed: {type(exc).__name__} "
            "(run it again: it resumes after the last acknowledged batch)"
        ) from None
    log.info(
        "DLQ %s: %s %d, unreadable %d, foreign %d; by reason: %s",
        dlq_topic,
        "would replay" if dry_run else "replayed",
        report.replayed,
        report.skipped_unreadable,
        report.skipped_foreign,
        dict(report.by_reason),
    )
    return report


async def _replay(
    settings: Settings,
    dlq_topic: str,
    limit: int | None,
    progress: Callable[[int, int], None] | None,
    report: ReplayReport,
) -> None:
    partitions = await _partitions(settings, dlq_topic)
    options = client_options(settings)
    consumer = AIOKafkaConsumer(
        group_id=replay_group(settings), enable_auto_commit=False, auto_offset_reset="earliest", **options
    )
    producer = None if report.dry_run else idempotent_producer(settings)
    try:
        await consumer.start()
        if producer is not None:
            await producer.start()
        consumer.assign(partitions)  # the group only keeps positions: no rebalancing needed
        ends = await consumer.end_offsets(partitions)
        starts = {tp: await consumer.position(tp) for tp in partitions}
        total = sum(max(ends[tp] - starts[tp], 0) for tp in partitions)
        total = total if limit is None else min(total, limit)
        log.info("Replaying %d record(s) of %s%s", total, dlq_topic, " (dry run)" if report.dry_run else "")
        _notify(progress, 0, total)
        for tp in partitions:
            while report.processed < total and await consumer.position(tp) < ends[tp]:
                batch = (await consumer.getmany(tp, timeout_ms=1000, max_records=BATCH_SIZE)).get(tp, [])
                batch = [r for r in batch if r.offset < ends[tp]][: total - report.processed]
                if batch:
                    await _replay_batch(producer, consumer, tp, batch, report)
                    _notify(progress, report.processed, total)
    finally:
        await consumer.stop()
        if producer is not None:
            await producer.stop()


async def _partitions(settings: Settings, dlq_topic: str) -> list[TopicPartition]:
    """The DLQ's partitions, once it and the topic it replays to are known to exist."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        topics = {topic["topic"]: topic for topic in await admin.describe_topics()}  # all: never auto-creates
    finally:
        await admin.close()
    source = dlq_topic.removesuffix(DLQ_SUFFIX)
    for name in (dlq_topic, source):
        if name not in topics:
            raise TokenRefreshError(f"topic {name!r} does not exist")
    return sorted(TopicPartition(dlq_topic, p["partition"]) for p in topics[dlq_topic]["partitions"])


async def _replay_batch(
    producer: AIOKafkaProducer | None,
    consumer: AIOKafkaConsumer,
    tp: TopicPartition,
    batch: list[ConsumerRecord],
    report: ReplayReport,
) -> None:
    """Send one batch, wait until the broker has all of it, then move the group's position past it."""
    sent = []
    for record in batch:
        parsed = _dead_letter(record)
        if parsed is None:
            report.skipped_unreadable += 1
            log.warning("Skipped %s[%d]@%d: not a readable dead letter", tp.topic, tp.partition, record.offset)
            continue
        dead, value = parsed
        if tp.topic != f"{dead.topic}{DLQ_SUFFIX}":
            report.skipped_foreign += 1
            log.warning("Skipped %s[%d]@%d: dead letter of another topic", tp.topic, tp.partition, record.offset)
            continue
        report.replayed += 1
        report.by_reason[dead.reason] += 1
        if producer is None:
            report.entries.append(ReplayEntry(dead.topic, dead.partition, dead.offset, dead.reason))
        else:
            sent.append(await producer.send(dead.topic, value, key=_original_key(record, dead)))
        log.debug("Replaying %s[%d]@%d (%s)", dead.topic, dead.partition, dead.offset, dead.reason)
    if producer is not None:
        await asyncio.gather(*sent)
        await consumer.commit({tp: batch[-1].offset + 1})


def _dead_letter(record: ConsumerRecord) -> tuple[DeadLetter, bytes] | None:
    """The record as a DeadLetter and the original value it carries, or None if it is not one."""
    try:
        dead = DeadLetter.model_validate_json(record.value or b"")
        return dead, base64.b64decode(dead.value_base64, validate=True)
    except (ValidationError, binascii.Error):
        return None


def _original_key(record: ConsumerRecord, dead: DeadLetter) -> bytes | None:
    """The original key's bytes: the DLQ record's own key (written from them) when it matches the
    recorded text, which is lossy for keys that are not UTF-8."""
    if dead.key is None:
        return None
    if isinstance(record.key, bytes) and record.key.decode("utf-8", errors="replace") == dead.key:
        return record.key
    return dead.key.encode()


def _notify(progress: Callable[[int, int], None] | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)
