"""Reading an input topic in batches: `token.expiring` and `connection.created`.

Faust's fetcher hands an agent one record at a time, each through several event-loop
iterations; in a busy worker an iteration takes milliseconds, which held the refreshes to
the pace of one record every 8-20 ms whatever the in-flight limit (docs/benchmarks.md). This
consumer reads batches (aiokafka's ``getmany``) in the worker's own loop and hands each
record to the same in-order dispatcher. A partition's offset is committed only up to the
first record not yet done (``InOrderAcks``), every ``COMMIT_INTERVAL_SECONDS`` and when its
partitions are revoked or the worker stops; a crash re-delivers what was in flight, which the
engine handles idempotently.

Each topic has its consumer group, the worker's (KAFKA_APP_ID) plus a suffix (``-refresh``,
``-ingest``): Faust's own group speaks Faust's assignment protocol, which a plain consumer
cannot join, and a group per topic lets one topic's rebalance leave the other's reading alone.
A partition its group never committed starts where Faust's group (which read these topics in
earlier versions) left it, so an upgrade neither re-reads a topic nor skips what was unread
(``adopt_offsets``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import ConsumerStoppedError, KafkaError
from faust.types import TP, EventT, Message

from agents.dispatch import Dispatcher, InOrderAcks
from stream_app.kafka_client import client_options
from stream_app.settings import Settings

log = logging.getLogger(__name__)

MAX_RECORDS_PER_FETCH = 1000
COMMIT_INTERVAL_SECONDS = 1.0
# Refreshes are bounded (HTTP deadline, capped retries, long waits recorded as holds), but a
# database outage makes outcome commits retry: allow the reading to pause that long before the
# group takes the partitions away.
MAX_POLL_INTERVAL_MS = 600_000


def refresh_group_id(app_id: str) -> str:
    """The consumer group of the worker's `token.expiring` reading (KAFKA_APP_ID's sibling)."""
    return f"{app_id}-refresh"


def ingest_group_id(app_id: str) -> str:
    """The consumer group of the worker's `connection.created` reading (KAFKA_APP_ID's sibling)."""
    return f"{app_id}-ingest"


# What to do with a record: the job to run for it, or None when it needs none (acked in turn).
Route = Callable[[EventT[bytes]], Callable[[], Awaitable[None]] | None]


class BatchConsumer:
    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        topic: str,
        *,
        group_id: str,
        route: Route,
        dispatcher: Callable[[InOrderAcks], Dispatcher],
        drain_seconds: float,
    ) -> None:
        self._app = app
        self._settings = settings
        self._topic = topic
        self._group_id = group_id
        self._route = route
        self._drain_seconds = drain_seconds
        self._acks = InOrderAcks(self._done)
        self._dispatcher = dispatcher(self._acks)
        self._committable: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._reading: asyncio.Task[None] | None = None
        # Whether the group has assigned this member its partitions (none, with more members
        # than partitions, is an assignment too); false again while a rebalance is under way.
        self.joined = False

    @property
    def group_id(self) -> str:
        return self._group_id

    async def lag(self) -> dict[tuple[str, int], int]:
        """Records not yet read from each partition assigned here (the log end offset the last
        fetch saw minus the position: the Java client's records-lag)."""
        consumer = self._consumer
        if consumer is None or not self.joined:
            return {}
        lags = {}
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:  # nothing fetched from it yet
                continue
            try:
                async with asyncio.timeout(1):
                    position = await consumer.position(tp)
            except (TimeoutError, KafkaError):
                continue
            lags[(tp.topic, tp.partition)] = max(0, highwater - position)
        return lags

    async def start(self) -> None:
        await adopt_offsets(self._settings, self._topic, self._group_id, self._settings.kafka_app_id)
        consumer = AIOKafkaConsumer(
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(self._settings.kafka_session_timeout_seconds * 1000),
            heartbeat_interval_ms=int(min(3.0, self._settings.kafka_session_timeout_seconds / 3) * 1000),
            max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
            **client_options(self._settings),
        )
        consumer.subscribe([self._topic], listener=_Rebalance(self))
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._reading = asyncio.create_task(self._read(consumer))

    async def stop(self) -> None:
        """Stop reading, let what is in flight finish (for ``drain_seconds`` at most), commit
        what is done, leave the group."""
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._drain_seconds):
                await self._dispatcher.drain()
        self.joined = False
        if self._consumer is not None:
            await self._commit(self._consumer, self._consumer.assignment())
            await self._consumer.stop()

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        last_commit = time.monotonic()
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=500, max_records=MAX_RECORDS_PER_FETCH)
            except ConsumerStoppedError:
                return
            for tp, records in batches.items():
                for record in records:
                    await self._take(self._event(tp, record))
            if time.monotonic() - last_commit >= COMMIT_INTERVAL_SECONDS:
                await self._commit(consumer, consumer.assignment())
                last_commit = time.monotonic()

    async def _take(self, event: EventT[bytes]) -> None:
        job = self._route(event)
        if job is None:
            await self._dispatcher.settled(event)
        else:
            await self._dispatcher.submit(event, job)  # waits for a free slot: backpressure

    def _event(self, tp: TopicPartition, record: Any) -> EventT[bytes]:
        """The record as the Faust event the agents' helpers (dead letters, acks) take."""
        message = Message(
            record.topic,
            record.partition,
            record.offset,
            record.timestamp / 1000.0,
            record.timestamp_type,
            record.headers,
            record.key,
            record.value,
            record.checksum,
            tp=TP(tp.topic, tp.partition),
        )
        return faust.Event(self._app, record.key, record.value, record.headers, message)

    async def _done(self, event: EventT[bytes]) -> None:
        """InOrderAcks' ack: every record of the partition up to this one is done."""
        tp = event.message.tp
        self._committable[TopicPartition(tp.topic, tp.partition)] = event.message.offset + 1

    async def _commit(self, consumer: AIOKafkaConsumer, partitions: Any) -> None:
        offsets = {tp: self._committable.pop(tp) for tp in list(self._committable) if tp in partitions}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:  # a rebalance or the broker away: the next commit carries them
            log.warning("Committing offsets of %s failed (%s); will retry", self._topic, type(exc).__name__)
            for tp, offset in offsets.items():
                self._committable.setdefault(tp, offset)

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        """Before the group hands these partitions to another member: their records in flight
        finish (for ``drain_seconds`` at most), what is done is committed, the rest is dropped
        and will be delivered again to the new owner."""
        self.joined = False
        tps = {TP(tp.topic, tp.partition) for tp in partitions}
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._drain_seconds):
                await self._acks.wait_until_done(tps)
        if self._consumer is not None:
            await self._commit(self._consumer, partitions)
        for tp in tps:
            self._acks.forget(tp)
        for tp in partitions:
            self._committable.pop(tp, None)

    async def assigned(self, partitions: set[TopicPartition]) -> None:
        self.joined = True
        log.info("%s partitions assigned: %s", self._topic, sorted(tp.partition for tp in partitions))


async def adopt_offsets(settings: Settings, topic: str, group_id: str, legacy_group_id: str) -> None:
    """Commit for ``group_id`` the offsets ``legacy_group_id`` committed on partitions of
    ``topic`` that ``group_id`` never committed, before ``group_id`` is joined. A group with
    members refuses such a commit: one of them has done it already."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        ours = await _group_offsets(admin, group_id)
        theirs = await _group_offsets(admin, legacy_group_id)
    finally:
        await admin.close()
    committed = {tp for tp, meta in ours.items() if meta.offset >= 0}
    missing = {tp: meta.offset for tp, meta in theirs.items() if tp.topic == topic and meta.offset >= 0}
    missing = {tp: offset for tp, offset in missing.items() if tp not in committed}
    if not missing:
        return
    consumer = AIOKafkaConsumer(group_id=group_id, enable_auto_commit=False, **client_options(settings))
    await consumer.start()
    try:
        consumer.assign(list(missing))
        await consumer.commit(missing)
        log.info("%s: group %s starts where group %s left it", topic, group_id, legacy_group_id)
    except KafkaError as exc:
        log.info("%s: group %s did not take over offsets (%s): it has members", topic, group_id, type(exc).__name__)
    finally:
        await consumer.stop()


async def _group_offsets(admin: AIOKafkaAdminClient, group_id: str, patience: float = 60.0) -> Any:
    """The group's committed offsets; a broker still electing its group coordinator (a fresh
    one has no offsets topic yet) is asked again for ``patience`` seconds."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return await admin.list_consumer_group_offsets(group_id)
        except KafkaError as exc:
            if not exc.retriable or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no types
    def __init__(self, consumer: BatchConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._consumer.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._consumer.assigned(assigned)
