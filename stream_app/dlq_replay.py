"""Replaying a dead-letter topic after a fix (``token-refresh dlq replay TOPIC``).

Each DLQ record's original bytes go back, under their original key and with their original
headers (in order, repeated names kept: a producer's signature among them), to the topic they
came from. The position in the DLQ is kept by a consumer group of its own and committed once a
batch is acknowledged by the broker, so a later run replays only what arrived since, and a
crash re-sends at most one batch (which the service tolerates: a `connection.created` no newer
than its row is ignored, a repeated refresh request finds the token fresh). Replayed records
arrive after newer events of the same connection; the same rules keep that harmless.

A dead letter carries its record's value, headers and key sealed (stream_app/sealed_letters.py),
opened here with the configured keys (current or retired); one of an earlier version kept no
headers, and its record goes back without any, under the letter's readable key. One whose value
an earlier version kept in base64 (``value_base64``) carries no proof of where it came from:
anyone who can write the DLQ could have written it, so it is replayed only with ``legacy``
(``dlq replay --legacy``), else reported as not replayed. One that does not carry a record this run can
open (``value_omitted``: too large for a dead letter, or a minimal one; sealed under a key not
configured; one of an earlier version whose value was ``redacted``) is never re-sent as an
empty record nor as something else. Its record is read again at its topic, partition and
offset and replayed from there, headers included, if the topic still retains it (and it has
the dead letter's size and key); if not, it is reported as not replayed, with its position and
why, and passed like the rest.

Record values and headers may carry secrets: nothing here logs them, only positions and reasons.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError
from pydantic import ValidationError

from schemas import DeadLetter
from stream_app.errors import TokenRefreshError
from stream_app.ingest import MAX_EVENT_BYTES
from stream_app.kafka_client import (
    DLQ_SUFFIX,
    cap_client_logging,
    client_options,
    existing_partitions,
    idempotent_producer,
)
from stream_app.redacted_view import printable
from stream_app.sealed_letters import Headers, LetterSeal, UnsealError
from stream_app.settings import Settings

log = logging.getLogger(__name__)

BATCH_SIZE = 500
# How long reading one retained record back from its topic may take before the run fails
# (and can be run again): the broker has it, so only a broker in trouble takes this long.
FETCH_TIMEOUT_SECONDS = 30.0
LEGACY_REFUSED = (
    "a dead letter of an earlier version (value_base64): nothing proves where its value came from; "
    "replay it with --legacy if only the service could have written this topic"
)


@dataclass(frozen=True)
class ReplayEntry:
    """Where a dead-lettered record came from, and why it failed."""

    topic: str
    partition: int
    offset: int
    reason: str


@dataclass(frozen=True)
class NotReplayed:
    """A dead letter whose record could not be sent back: the record's position, why it was
    dead-lettered (``reason``), why it is not replayed (``why``), and the dead letter's own
    position in the DLQ."""

    topic: str
    partition: int
    offset: int
    reason: str
    why: str
    dead_letter_partition: int
    dead_letter_offset: int


@dataclass
class ReplayReport:
    """``replayed`` counts what was re-produced (in a dry run: what would be, listed in
    ``entries``), ``reread`` those of them read back from their topic; ``not_replayed`` lists
    the dead letters whose record could not be had (in a dry run too)."""

    dry_run: bool = False
    replayed: int = 0
    reread: int = 0
    skipped_unreadable: int = 0
    skipped_foreign: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    entries: list[ReplayEntry] = field(default_factory=list)
    not_replayed: list[NotReplayed] = field(default_factory=list)

    @property
    def processed(self) -> int:
        return self.replayed + len(self.not_replayed) + self.skipped_unreadable + self.skipped_foreign

    @property
    def all_replayed(self) -> bool:
        """Whether every DLQ record handled was (or, in a dry run, would be) replayed."""
        return not (self.not_replayed or self.skipped_unreadable or self.skipped_foreign)


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
    legacy: bool = False,
) -> ReplayReport:
    """Re-produce the records of ``dlq_topic`` that arrived since the last run, up to its end
    offsets at the time of the call, to their original topic.

    ``limit`` caps the DLQ records handled (skipped ones included); ``progress(done, total)`` is
    called at the start and after each batch. A dry run sends and commits nothing (it does read
    records back from their topic, to tell which can be replayed). ``legacy`` replays the value
    that letters of earlier versions carry in base64 (unauthenticated). Raises TokenRefreshError
    (one line) if a topic is missing or Kafka fails; a rerun resumes."""
    if not dlq_topic.endswith(DLQ_SUFFIX):
        raise TokenRefreshError(f"{dlq_topic!r} is not a dead-letter topic (its name must end in {DLQ_SUFFIX!r})")
    if limit is not None and limit < 0:
        raise ValueError("limit must not be negative")
    report = ReplayReport(dry_run=dry_run)
    cap_client_logging()
    try:
        await _replay(settings, dlq_topic, limit, progress, report, legacy)
    except KafkaError as exc:
        raise TokenRefreshError(
            f"DLQ replay of {dlq_topic!r} failed: {type(exc).__name__} "
            "(run it again: it resumes after the last acknowledged batch)"
        ) from None
    log.info(
        "DLQ %s: %s %d (%d read back from their topic), not replayed %d, unreadable %d, foreign %d; by reason: %s",
        dlq_topic,
        "would replay" if dry_run else "replayed",
        report.replayed,
        report.reread,
        len(report.not_replayed),
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
    legacy: bool,
) -> None:
    partitions, source_partitions = await _partitions(settings, dlq_topic)
    options = client_options(settings)
    consumer = AIOKafkaConsumer(
        group_id=replay_group(settings), enable_auto_commit=False, auto_offset_reset="earliest", **options
    )
    originals = _Originals(settings, source_partitions)
    seal = LetterSeal.from_settings(settings)
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
                    await _replay_batch(producer, consumer, originals, seal, tp, batch, report, legacy)
                    _notify(progress, report.processed, total)
    finally:
        await consumer.stop()
        await originals.close()
        if producer is not None:
            await producer.stop()


async def _partitions(settings: Settings, dlq_topic: str) -> tuple[list[TopicPartition], set[TopicPartition]]:
    """The DLQ's partitions and those of the topic it replays to, once both are known to exist."""
    source = dlq_topic.removesuffix(DLQ_SUFFIX)
    found = await existing_partitions(settings, dlq_topic, source)
    return found[dlq_topic], set(found[source])


async def _replay_batch(
    producer: AIOKafkaProducer | None,
    consumer: AIOKafkaConsumer,
    originals: _Originals,
    seal: LetterSeal,
    tp: TopicPartition,
    batch: list[ConsumerRecord],
    report: ReplayReport,
    legacy: bool,
) -> None:
    """Send one batch, wait until the broker has all of it, then move the group's position past it."""
    sent = []
    for record in batch:
        parsed = _dead_letter(record)
        if parsed is None:
            report.skipped_unreadable += 1
            log.warning("Skipped %s[%d]@%d: not a readable dead letter", tp.topic, tp.partition, record.offset)
            continue
        dead, legacy_value = parsed
        if tp.topic != f"{dead.topic}{DLQ_SUFFIX}":
            report.skipped_foreign += 1
            log.warning("Skipped %s[%d]@%d: dead letter of another topic", tp.topic, tp.partition, record.offset)
            continue
        if _carries_legacy_value(dead) and not legacy:
            _not_replayed(report, dead, record, LEGACY_REFUSED)
            continue
        kept = _record_kept(record, dead, legacy_value, seal)
        missing = None  # or why the record must be read back from its topic
        original: _Record | str
        if isinstance(kept, str):
            missing, original = kept, await originals.read(dead)
        else:
            original = kept
        if isinstance(original, str):
            _not_replayed(report, dead, record, f"{missing}; {original}")
            continue
        if producer is not None:
            try:
                sent.append(await producer.send(dead.topic, original.value, key=original.key, headers=original.headers))
            except MessageSizeTooLargeError:  # raised before anything is sent
                _not_replayed(report, dead, record, "too large to send (MessageSizeTooLargeError)")
                continue
        else:
            report.entries.append(ReplayEntry(dead.topic, dead.partition, dead.offset, dead.reason))
        report.replayed += 1
        if missing is not None:
            report.reread += 1
        report.by_reason[dead.reason] += 1
        log.debug("Replaying %s[%d]@%d (%s)", dead.topic, dead.partition, dead.offset, printable(dead.reason))
    if producer is not None:
        await asyncio.gather(*sent)
        await consumer.commit({tp: batch[-1].offset + 1})


def _not_replayed(report: ReplayReport, dead: DeadLetter, record: ConsumerRecord, why: str) -> None:
    report.not_replayed.append(
        NotReplayed(dead.topic, dead.partition, dead.offset, dead.reason, why, record.partition, record.offset)
    )
    log.warning(
        "Not replayed %s[%d]@%d (dead letter %s[%d]@%d): %s",
        dead.topic,
        dead.partition,
        dead.offset,
        record.topic,
        record.partition,
        record.offset,
        printable(why),
    )


def _dead_letter(record: ConsumerRecord) -> tuple[DeadLetter, bytes] | None:
    """The record as a DeadLetter and the value an earlier version kept in base64, or None if
    it is not one."""
    try:
        dead = DeadLetter.model_validate_json(record.value or b"")
        return dead, base64.b64decode(dead.value_base64, validate=True)
    except (ValidationError, binascii.Error):
        return None


@dataclass(frozen=True)
class _Record:
    """What is sent back: the dead-lettered record's key, value and headers."""

    key: bytes | None
    value: bytes | None
    headers: Headers


def _carries_legacy_value(dead: DeadLetter) -> bool:
    """Whether replaying ``dead`` would send what an earlier version kept in ``value_base64``."""
    return dead.sealed_key_id is None and not dead.value_omitted and not dead.redacted


def _record_kept(record: ConsumerRecord, dead: DeadLetter, legacy_value: bytes, seal: LetterSeal) -> _Record | str:
    """The record (key, value, headers) as the dead letter keeps it, or why it does not (an
    empty value is the record's own: an empty record is replayed as one). A letter of an earlier
    version kept no headers: its record had none as far as anyone can tell."""
    if dead.value_omitted:
        return "value omitted from the dead letter"
    if dead.sealed_key_id is not None:
        try:
            value = seal.unseal(dead)
        except UnsealError as exc:
            return f"sealed value not opened: {exc}"
        try:
            headers = seal.unseal_headers(dead) or []
        except UnsealError as exc:
            return f"sealed headers not opened: {exc}"
        if dead.sealed_key:
            try:
                return _Record(seal.unseal_key(dead), value, headers)
            except UnsealError as exc:
                return f"sealed key not opened: {exc}"
        if dead.key is None and dead.key_size is not None:
            return "key not kept in the dead letter"
        return _Record(_original_key(record, dead), value, headers)
    if dead.redacted:  # an earlier version's: what it kept is not the record's value
        return "value withheld from the dead letter (redacted)"
    return _Record(_original_key(record, dead), legacy_value, [])


def _original_key(record: ConsumerRecord, dead: DeadLetter) -> bytes | None:
    """The original key's bytes in a letter that does not keep it sealed (an earlier version's):
    the DLQ record's own key (written from them) when it matches the recorded text, which is
    lossy for keys that are not UTF-8."""
    if dead.key is None:
        return None
    if isinstance(record.key, bytes) and record.key.decode("utf-8", errors="replace") == dead.key:
        return record.key
    return dead.key.encode()


class _Originals:
    """Reads dead-lettered records back from their topic by position (no consumer group)."""

    def __init__(self, settings: Settings, partitions: set[TopicPartition]) -> None:
        self._settings = settings
        self._partitions = partitions
        self._consumer: AIOKafkaConsumer | None = None

    async def read(self, dead: DeadLetter) -> _Record | str:
        """The dead-lettered record (key, value, headers), or why it cannot be had."""
        if dead.value_size > MAX_EVENT_BYTES:
            return f"{dead.value_size} bytes, over the input limit ({MAX_EVENT_BYTES}): it would be dead-lettered again"
        tp = TopicPartition(dead.topic, dead.partition)
        if tp not in self._partitions:
            return f"{dead.topic} has no partition {dead.partition}"
        consumer = await self._started()
        first = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        if not first <= dead.offset < end:
            retained = f"offsets {first}..{end - 1}" if first < end else "no record"
            return f"no longer retained in {dead.topic}[{dead.partition}] (it holds {retained})"
        record = await self._record_at(consumer, tp, dead.offset)
        if record.offset != dead.offset:
            return f"no longer in {dead.topic}[{dead.partition}] (compacted away)"
        if not _same_record(record, dead):
            return f"{dead.topic}[{dead.partition}]@{dead.offset} now holds another record (its size or key differ)"
        return _Record(record.key, record.value, list(record.headers))

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",  # past the log's start: the next record, which is then refused
                **client_options(self._settings),
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    @staticmethod
    async def _record_at(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> ConsumerRecord:
        """The record at ``offset``, or the first after it if that one is gone."""
        consumer.assign([tp])
        consumer.seek(tp, offset)
        deadline = time.monotonic() + FETCH_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            records = (await consumer.getmany(tp, timeout_ms=1000, max_records=1)).get(tp, [])
            if records:
                return records[0]
        raise KafkaTimeoutError(f"reading {tp.topic}[{tp.partition}]@{offset} back")

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


def _same_record(record: ConsumerRecord, dead: DeadLetter) -> bool:
    """Whether ``record`` is the one ``dead`` was written for: same value size and key (a
    minimal dead letter of an earlier version kept the key's start only; one that keeps the key
    only sealed keeps its size)."""
    if len(record.value or b"") != dead.value_size:
        return False
    if dead.key is None:
        if dead.key_size is not None:
            return isinstance(record.key, bytes) and len(record.key) == dead.key_size
        return record.key is None
    return isinstance(record.key, bytes) and record.key.decode("utf-8", errors="replace").startswith(dead.key)


def _notify(progress: Callable[[int, int], None] | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)
