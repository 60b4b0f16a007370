"""The producers for everything the service publishes, acks=all: outcome events and the scan's
requests through an idempotent one (once each, in order), dead letters through their own."""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, ProducerClosed
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from stream_app.kafka_client import client_options, idempotent_producer
from stream_app.settings import Settings

log = logging.getLogger(__name__)

# A batch per partition of up to this many bytes, so one round trip carries a whole page of
# requests (aiokafka's default, 16 KiB, holds about 50 of them). Well under max_request_size
# and the broker's max.message.bytes (both 1 MiB by default), which stay as they are.
MAX_BATCH_BYTES = 256 * 1024
# aiokafka's default, kept: a dead letter must fit it (agents/context.py).
MAX_REQUEST_BYTES = 1024 * 1024
# A record of at most this many bytes of key and value fits a request whatever its overhead.
_SURELY_FITS = MAX_REQUEST_BYTES - 4096
_estimate = DefaultRecordBatchBuilder.estimate_size_in_bytes
# A record sent alone (a dead letter) waits this long for company; send_many's batches do not wait.
LINGER_MS = 5
# How long a replaced producer may take to flush what it still holds.
_REPLACED_STOP_SECONDS = 30.0


class OutgoingRecord(NamedTuple):
    topic: str
    key: bytes
    value: bytes


class KafkaPublisher:
    """Two producers, each started on first use (agents may publish before Faust starts user
    services).

    Dead letters have their own, not idempotent: the broker refuses a dead letter over the
    dead-letter topic's max.message.bytes, and a refused batch leaves an idempotent producer's
    sequence numbers for that partition broken (aiokafka, unlike the Java client, does not
    reset them): every later batch of the partition would be refused as out of order, outcome
    events included. A dead letter may therefore be written twice (a retry after a lost
    acknowledgement); it names its record's position, and replaying a record twice applies it
    once (event ids)."""

    def __init__(self, settings: Settings) -> None:
        options: dict[str, Any] = {
            "linger_ms": LINGER_MS,
            "max_request_size": MAX_REQUEST_BYTES,
            "partitioner": partition_by_key,
        }
        self._outcomes = _LazyProducer(lambda: idempotent_producer(settings, max_batch_size=MAX_BATCH_BYTES, **options))
        self._letters = _LazyProducer(lambda: AIOKafkaProducer(acks="all", **client_options(settings), **options))

    async def warm_up(self, topics: Sequence[str]) -> None:
        """Connect and learn the partitions of ``topics`` now, so the first page the scan sends
        (which waits for its acknowledgements only briefly) does not pay for it."""
        producer = await self._outcomes.get()
        for topic in topics:
            await producer.partitions_for(topic)

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Send one dead letter and return once every in-sync replica has it."""
        _refuse_if_over_request_size(key, value)
        producer = await self._letters.get()
        try:
            await producer.send_and_wait(topic, value, key=key)
        except MessageSizeTooLargeError:
            # The broker refuses a whole batch over the topic's limit, the records that lingered
            # with the one too large included: once more in a batch of its own.
            await _send_alone(producer, topic, key, value)

    async def send_many(self, records: Sequence[OutgoingRecord]) -> None:
        """Send records in their order and return once every in-sync replica has all of them;
        raises if any of them failed (some of the others may have been delivered).

        The records are packed into one batch per partition (more when a batch is full), each
        in the records' order, and the batches of a partition are queued in order: records of
        one key (one partition) reach the topic in this order, since the producer keeps one
        batch per partition in flight and, being idempotent, retries without reordering. The
        partition is the one ``send`` would choose (the same partitioner)."""
        producer = await self._outcomes.get()
        deliveries: list[asyncio.Future[Any]] = []
        try:
            await self._queue(producer, records, deliveries)
        finally:
            # Even when queueing failed part-way, wait for what was queued: no delivery is left
            # unobserved, and the caller's retry does not race the first attempt.
            outcomes = await asyncio.gather(*deliveries, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, KafkaError) and not outcome.retriable:
                # A batch refused for good used a sequence number the broker never recorded:
                # the partition's next batches would be refused as out of order. The caller's
                # retry goes through a new producer (a new producer id, numbering from 0).
                await self._outcomes.replace(producer)
            if isinstance(outcome, BaseException):
                raise outcome

    async def _queue(
        self, producer: AIOKafkaProducer, records: Sequence[OutgoingRecord], deliveries: list[asyncio.Future[Any]]
    ) -> None:
        partitions: dict[str, tuple[list[int], list[int]]] = {}
        open_batches: dict[tuple[str, int], BatchBuilder] = {}
        try:
            for topic, key, value in records:
                _refuse_if_over_request_size(key, value)  # the records before it are queued
                known = partitions.get(topic)
                if known is None:
                    all_partitions = list(await producer.partitions_for(topic))
                    known = partitions[topic] = (all_partitions, list(_available(producer, topic)))
                partition = partition_by_key(key, *known)
                batch = open_batches.get((topic, partition))
                if batch is not None and batch.append(timestamp=None, key=key, value=value) is not None:
                    continue
                if batch is not None:  # full: on its way, and a new one for this partition
                    deliveries.append(await producer.send_batch(batch, topic, partition=partition))
                batch = open_batches[(topic, partition)] = producer.create_batch()
                batch.append(timestamp=None, key=key, value=value)  # a first record always fits
        finally:
            for (topic, partition), batch in open_batches.items():
                batch.close()  # complete: sent without lingering
                deliveries.append(await producer.send_batch(batch, topic, partition=partition))

    async def stop(self) -> None:
        await asyncio.gather(self._outcomes.stop(), self._letters.stop())


class _LazyProducer:
    """A producer started on first use, replaced when it can no longer send."""

    def __init__(self, make: Callable[[], AIOKafkaProducer]) -> None:
        self._make = make
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._stopped = False

    async def get(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is not None and _sender_stopped(self._producer):
                self._retire(self._producer)
            if self._producer is None:
                if self._stopped:
                    raise ProducerClosed()
                producer = self._make()
                await producer.start()
                self._producer = producer
            return self._producer

    async def replace(self, broken: AIOKafkaProducer) -> None:
        async with self._lock:
            if self._producer is broken:
                self._retire(broken)

    def _retire(self, producer: AIOKafkaProducer) -> None:
        """The next ``get`` starts a new producer; this one flushes what it still can, apart."""
        log.warning("Replacing a Kafka producer that can no longer send")
        self._producer = None
        task = asyncio.create_task(_stop_within(producer, _REPLACED_STOP_SECONDS))
        _retiring.add(task)
        task.add_done_callback(_retiring.discard)

    async def stop(self) -> None:
        self._stopped = True
        async with self._lock:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None


_retiring: set[asyncio.Task[None]] = set()


async def _stop_within(producer: AIOKafkaProducer, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await producer.stop()
    except Exception as exc:
        log.warning("Stopping a replaced Kafka producer failed (%s)", type(exc).__name__)


async def _send_alone(producer: AIOKafkaProducer, topic: str, key: bytes, value: bytes) -> None:
    """One record in a batch of its own, to the partition ``send`` would choose."""
    partitions = list(await producer.partitions_for(topic))
    batch = producer.create_batch()
    batch.append(timestamp=None, key=key, value=value)
    batch.close()
    partition = partition_by_key(key, partitions, list(_available(producer, topic)))
    await (await producer.send_batch(batch, topic, partition=partition))


def _refuse_if_over_request_size(key: bytes, value: bytes) -> None:
    """What the producer refuses before sending (no broker asked, the producer left as it is)."""
    if len(key) + len(value) > _SURELY_FITS and _estimate(key, value, []) > MAX_REQUEST_BYTES:
        raise MessageSizeTooLargeError(f"a record of {len(key) + len(value)} bytes: over max_request_size")


def _sender_stopped(producer: AIOKafkaProducer) -> bool:
    """Whether aiokafka's sender task has ended (it stops for good on an out-of-order sequence
    number): nothing queued on this producer would ever be sent."""
    task = producer._sender.sender_task  # aiokafka exposes no health check
    return task is not None and task.done()


def _available(producer: AIOKafkaProducer, topic: str) -> set[int]:
    available: set[int] = producer.client.cluster.available_partitions_for_topic(topic)
    return available


def partition_by_key(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka's (and the Java client's) default partitioner, with a faster murmur2: the
    publisher's partitioner, for ``send`` and ``send_many`` alike."""
    if key is None:  # never, for this service: every record has a key
        return random.choice(available or all_partitions)  # noqa: S311 - not security
    return all_partitions[(murmur2(key) & 0x7FFFFFFF) % len(all_partitions)]


_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS = [struct.Struct(f"<{count}I") for count in range(64)]


def murmur2(data: bytes, _words: list[struct.Struct] = _WORDS, m: int = _M, mask: int = _MASK) -> int:
    """The Java client's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``), as unsigned,
    like ``aiokafka.partitioner.murmur2`` but 2-3x faster (whole words unpacked at once)."""
    length = len(data)
    h = 0x9747B28C ^ length
    count = length >> 2
    words = _words[count].unpack_from(data) if count < len(_words) else struct.unpack_from(f"<{count}I", data)
    for word in words:
        k = (word * m) & mask
        h = ((h * m) & mask) ^ (((k ^ (k >> 24)) * m) & mask)
    tail = length & 3
    if tail:
        base = length - tail
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h = ((h ^ data[base]) * m) & mask
    h = ((h ^ (h >> 13)) * m) & mask
    return h ^ (h >> 15)
