"""The batch consumer of `token.expiring` (agents.batch_consumer) on the real broker: every
record reaches its job, a partition's offset is committed only past records whose work is
done, and a stop lets the work in flight end before it commits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import faust
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import EventT

from agents.batch_consumer import BatchConsumer, refresh_group_id
from agents.dispatch import Dispatcher
from stream_app.settings import Settings, load_settings
from tests.support.kafka import committed_offset, create_topics, produce

pytestmark = pytest.mark.kafka


class Jobs:
    """A job per record that waits until its record's value is released."""

    def __init__(self) -> None:
        self.started: list[bytes] = []
        self.released: dict[bytes, asyncio.Event] = {}
        self.all_started = asyncio.Event()
        self.expected = 0

    def release(self, value: bytes) -> None:
        self.released.setdefault(value, asyncio.Event()).set()

    def route(self, record: EventT[bytes]) -> Callable[[], Awaitable[None]]:
        value = record.value
        assert isinstance(value, bytes)

        async def job() -> None:
            self.started.append(value)
            if len(self.started) == self.expected:
                self.all_started.set()
            await self.released.setdefault(value, asyncio.Event()).wait()

        return job


def consumer_for(settings: Settings, topic: str, jobs: Jobs, drain_seconds: float = 10) -> BatchConsumer:
    async def last_resort(_event: object, _exc: Exception) -> None:
        raise AssertionError("no job should escape")

    return BatchConsumer(
        faust.App(settings.kafka_app_id, broker=f"kafka://{settings.kafka_bootstrap_servers}"),
        settings,
        topic,
        group_id=refresh_group_id(settings.kafka_app_id),
        route=jobs.route,
        dispatcher=lambda acks: Dispatcher(acks, max_in_flight=10, on_escape=last_resort),
        drain_seconds=drain_seconds,
    )


async def committed(settings: Settings, tp: TopicPartition) -> int:
    return await committed_offset(settings.kafka_bootstrap_servers, refresh_group_id(settings.kafka_app_id), tp)


async def wait_committed(settings: Settings, tp: TopicPartition, offset: int) -> None:
    async with asyncio.timeout(30):
        while await committed(settings, tp) < offset:
            await asyncio.sleep(0.2)


@pytest.fixture
async def setup(kafka_bootstrap: str, encryption_key: str) -> tuple[Settings, str]:
    topic = f"token.expiring.batch-test-{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_bootstrap, [topic], partitions=1)
    settings = load_settings(
        encryption_key=encryption_key,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_app_id=f"batch-consumer-test-{uuid.uuid4().hex[:8]}",
    )
    return settings, topic


async def test_an_offset_is_committed_only_past_records_whose_work_is_done(setup: tuple[Settings, str]) -> None:
    settings, topic = setup
    tp = TopicPartition(topic, 0)
    jobs = Jobs()
    jobs.expected = 3
    await produce(settings.kafka_bootstrap_servers, topic, [(b"k", b"first"), (b"k", b"second"), (b"k", b"third")])
    consumer = consumer_for(settings, topic, jobs)
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            await jobs.all_started.wait()  # all three in flight at once
        jobs.release(b"second")
        jobs.release(b"third")
        await asyncio.sleep(2.5)  # past two commit intervals
        assert await committed(settings, tp) < 1  # the first is still running: nothing passes it

        jobs.release(b"first")
        await wait_committed(settings, tp, 3)
    finally:
        for value in (b"first", b"second", b"third"):
            jobs.release(value)
        await consumer.stop()
    assert sorted(jobs.started) == [b"first", b"second", b"third"]


async def test_a_stop_lets_the_work_in_flight_end_then_commits_it(setup: tuple[Settings, str]) -> None:
    settings, topic = setup
    tp = TopicPartition(topic, 0)
    jobs = Jobs()
    jobs.expected = 2
    await produce(settings.kafka_bootstrap_servers, topic, [(b"k", b"one"), (b"k", b"two")])
    consumer = consumer_for(settings, topic, jobs)
    await consumer.start()
    async with asyncio.timeout(30):
        await jobs.all_started.wait()
    jobs.release(b"one")

    stopping = asyncio.create_task(consumer.stop())
    await asyncio.sleep(0.5)
    assert not stopping.done()  # waits for "two"
    jobs.release(b"two")
    await stopping

    assert await committed(settings, tp) == 2


async def test_a_stop_commits_what_is_done_when_the_rest_outlasts_its_drain(setup: tuple[Settings, str]) -> None:
    settings, topic = setup
    tp = TopicPartition(topic, 0)
    jobs = Jobs()
    jobs.expected = 2
    await produce(settings.kafka_bootstrap_servers, topic, [(b"k", b"done"), (b"k", b"stuck")])
    consumer = consumer_for(settings, topic, jobs, drain_seconds=1)
    await consumer.start()
    async with asyncio.timeout(30):
        await jobs.all_started.wait()
    jobs.release(b"done")

    await consumer.stop()
    jobs.release(b"stuck")

    assert await committed(settings, tp) == 1  # "stuck" is delivered again to the next reader


async def test_revoked_partitions_hand_over_after_their_work_in_flight_ends(setup: tuple[Settings, str]) -> None:
    settings, topic = setup
    tp = TopicPartition(topic, 0)
    first_jobs, second_jobs = Jobs(), Jobs()
    first_jobs.expected = 1
    await produce(settings.kafka_bootstrap_servers, topic, [(b"k", b"in flight")])
    first = consumer_for(settings, topic, first_jobs, drain_seconds=20)
    revocations_ended: list[float] = []
    revoke = first.revoked

    async def revoked(partitions: set[TopicPartition]) -> None:
        await revoke(partitions)
        if partitions:  # (a member's first join revokes nothing)
            revocations_ended.append(asyncio.get_running_loop().time())

    first.revoked = revoked  # type: ignore[method-assign]
    await first.start()
    second = consumer_for(settings, topic, second_jobs)
    try:
        async with asyncio.timeout(30):
            await first_jobs.all_started.wait()
        # Joining the group makes every member give its partitions back (eager rebalance); the
        # join completes once they have.
        joining = asyncio.create_task(second.start())
        await asyncio.sleep(3)
        assert await committed(settings, tp) < 1
        assert not revocations_ended  # the first's revocation waits for its job

        released_at = asyncio.get_running_loop().time()
        first_jobs.release(b"in flight")
        await wait_committed(settings, tp, 1)
        await joining
        assert revocations_ended and revocations_ended[0] >= released_at
        await produce(settings.kafka_bootstrap_servers, topic, [(b"k", b"after")])
        for jobs in (first_jobs, second_jobs):  # the group gives the partition to either
            jobs.release(b"after")
        await wait_committed(settings, tp, 2)
    finally:
        first_jobs.release(b"in flight")
        second_jobs.release(b"after")
        await asyncio.gather(first.stop(), second.stop())
    # Whoever read on, the record done before the handover was not delivered again.
    assert b"in flight" not in second_jobs.started


async def commit_as(settings: Settings, group: str, tp: TopicPartition, offset: int) -> None:
    """Commit ``offset`` on ``tp`` for ``group``, as a member of it would have."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: offset})
    finally:
        await consumer.stop()


async def started_to_the_end(settings: Settings, topic: str, tp: TopicPartition, end: int) -> list[bytes]:
    """The values whose jobs a new consumer started, once its group committed up to ``end``."""
    jobs = Jobs()
    for n in range(end):
        jobs.release(b"%d" % n)
    consumer = consumer_for(settings, topic, jobs)
    await consumer.start()
    try:
        await wait_committed(settings, tp, end)
    finally:
        await consumer.stop()
    return jobs.started


async def test_a_partition_its_group_never_committed_starts_where_fausts_group_left_it(
    setup: tuple[Settings, str],
) -> None:
    """An upgrade from a version whose Faust agent read the topic neither re-reads the topic
    nor skips what the agent had not read."""
    settings, topic = setup
    tp = TopicPartition(topic, 0)
    await produce(settings.kafka_bootstrap_servers, topic, [(b"k", b"%d" % n) for n in range(5)])
    await commit_as(settings, settings.kafka_app_id, tp, 3)  # Faust's group: KAFKA_APP_ID
    assert await started_to_the_end(settings, topic, tp, 5) == [b"3", b"4"]


async def test_a_partition_its_group_committed_ignores_fausts_group(setup: tuple[Settings, str]) -> None:
    settings, topic = setup
    tp = TopicPartition(topic, 0)
    await produce(settings.kafka_bootstrap_servers, topic, [(b"k", b"%d" % n) for n in range(5)])
    await commit_as(settings, settings.kafka_app_id, tp, 4)
    await commit_as(settings, refresh_group_id(settings.kafka_app_id), tp, 1)
    assert await started_to_the_end(settings, topic, tp, 5) == [b"1", b"2", b"3", b"4"]
