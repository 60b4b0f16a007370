"""The outbox relay publishes each key's events in commit (outbox id) order, however many relays
run at once and however slow one of them is; a failed send leaves its whole batch to be sent
again. Every check reads the records back from a real topic."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import MessageSizeTooLargeError
from sqlalchemy import func, select, update

from stream_app.clock import utc_now
from stream_app.db import Database
from stream_app.db.models import OutboxRow
from stream_app.publisher import KafkaPublisher, OutgoingRecord
from stream_app.relay import OutboxRelay
from stream_app.settings import Settings
from tests.support.kafka import create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

KEYS = [f"{uuid.uuid4()}:spotify".encode() for _ in range(3)]
BATCH_SIZE = 20
SendMany = Callable[[Sequence[OutgoingRecord]], Awaitable[object]]


@pytest.fixture
async def database(own_database_url: str) -> AsyncIterator[Database]:
    database = Database(own_database_url)
    yield database
    await database.dispose()


@pytest.fixture
async def topic(kafka_bootstrap: str) -> AsyncIterator[str]:
    name = f"relay-order.{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_bootstrap, [name], partitions=4)
    yield name
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([name])
    finally:
        await admin.close()


@pytest.fixture
async def publishers(kafka_bootstrap: str, encryption_key: str) -> AsyncIterator[list[KafkaPublisher]]:
    """One producer per relay, as two worker processes would have."""
    settings = Settings(encryption_key=encryption_key, kafka_bootstrap_servers=kafka_bootstrap)
    built = [KafkaPublisher(settings), KafkaPublisher(settings)]
    yield built
    for publisher in built:
        await publisher.stop()


async def seed(database: Database, topic: str, numbers: range, rng: random.Random) -> None:
    """One outbox row per number, each for a randomly chosen key (so the keys interleave)."""
    async with database.transaction() as session:
        for number in numbers:
            session.add(
                OutboxRow(
                    event_id=uuid.uuid4(),
                    topic=topic,
                    key=rng.choice(KEYS),
                    payload=json.dumps({"n": number}).encode(),
                    created_at=utc_now(),
                )
            )


async def id_order(database: Database) -> dict[bytes, list[int]]:
    """Per key, the numbers of its rows in outbox id order: the order the topic must show."""
    async with database.sessions() as session:
        rows = (await session.execute(select(OutboxRow.key, OutboxRow.payload).order_by(OutboxRow.id))).all()
    order: dict[bytes, list[int]] = defaultdict(list)
    for key, payload in rows:
        order[key].append(json.loads(payload)["n"])
    return dict(order)


async def pending(database: Database) -> int:
    async with database.sessions() as session:
        count = await session.scalar(select(func.count()).where(OutboxRow.published_at.is_(None)))
    return int(count or 0)


async def topic_order(bootstrap: str, topic: str, count: int, timeout: float = 60) -> dict[bytes, list[int]]:
    """Per key, the numbers on the topic in offset order (a key lives in one partition)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    order: dict[bytes, list[int]] = defaultdict(list)
    seen = 0
    deadline = time.monotonic() + timeout
    await consumer.start()
    try:
        while seen < count:
            assert time.monotonic() < deadline, f"{seen} of {count} records on the topic within {timeout}s"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    assert record.key is not None and record.value is not None
                    order[record.key].append(json.loads(record.value)["n"])
                    seen += 1
    finally:
        await consumer.stop()
    return dict(order)


def first_copies(numbers: list[int]) -> list[int]:
    """What a consumer that dedupes on event_id sees (a number is unique per event here)."""
    return list(dict.fromkeys(numbers))


async def test_a_relay_stands_aside_while_another_is_publishing(
    database: Database, topic: str, publishers: list[KafkaPublisher], kafka_bootstrap: str
) -> None:
    await seed(database, topic, range(120), random.Random(1))
    first_sending = asyncio.Event()
    release = asyncio.Event()

    async def stalled_once(records: Sequence[OutgoingRecord]) -> None:
        """The first relay's first batch hangs in its send until released."""
        if not first_sending.is_set():
            first_sending.set()
            await release.wait()
        await publishers[0].send_many(records)

    first = OutboxRelay(database, stalled_once, batch_size=BATCH_SIZE)
    second = OutboxRelay(database, publishers[1].send_many, batch_size=BATCH_SIZE)
    first_round = asyncio.create_task(first.publish_pending())
    await first_sending.wait()

    second_round = await second.publish_pending()  # while the first relay's batch is in flight

    assert (second_round.published, second_round.stood_aside) == (0, True)
    release.set()
    assert await first_round == (120, False)
    assert await pending(database) == 0
    assert await topic_order(kafka_bootstrap, topic, 120) == await id_order(database)


async def test_concurrent_relays_keep_each_keys_order_while_rows_keep_coming(
    database: Database, topic: str, publishers: list[KafkaPublisher], kafka_bootstrap: str
) -> None:
    rows, rounds = 300, 10
    rng = random.Random(2)
    await seed(database, topic, range(rows // 2), rng)

    async def slow(records: Sequence[OutgoingRecord]) -> None:
        await asyncio.sleep(0.05)  # a relay on a slow link: its batches stay in flight longer
        await publishers[0].send_many(records)

    relays = [
        OutboxRelay(database, slow, batch_size=BATCH_SIZE, retry_after_standing_aside=0.01),
        OutboxRelay(database, publishers[1].send_many, batch_size=BATCH_SIZE, retry_after_standing_aside=0.01),
    ]
    running = [asyncio.create_task(relay.run(poll_interval=0.05)) for relay in relays]
    try:
        # More rows commit while both relays publish, each waking its own relay as a worker does.
        step = (rows - rows // 2) // rounds
        for start in range(rows // 2, rows, step):
            await seed(database, topic, range(start, start + step), rng)
            relays[start % 2].wake()
            await asyncio.sleep(0.02)
        deadline = time.monotonic() + 60
        while await pending(database):
            assert time.monotonic() < deadline, "the relays did not publish everything within 60 s"
            await asyncio.sleep(0.05)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    on_topic = await topic_order(kafka_bootstrap, topic, rows)
    assert {key: first_copies(numbers) for key, numbers in on_topic.items()} == await id_order(database)


async def test_a_failed_send_leaves_the_whole_batch_to_be_sent_again(
    database: Database, topic: str, publishers: list[KafkaPublisher], kafka_bootstrap: str
) -> None:
    await seed(database, topic, range(10), random.Random(3))
    # The sixth row cannot be sent at all (larger than a request may be): the five before it
    # are delivered, the batch fails.
    async with database.transaction() as session:
        sixth = (await session.execute(select(OutboxRow).order_by(OutboxRow.id).offset(5).limit(1))).scalar_one()
        original_payload, sixth.payload = sixth.payload, b" " * 2_000_000
    relay = OutboxRelay(database, publishers[0].send_many, batch_size=BATCH_SIZE)

    with pytest.raises(MessageSizeTooLargeError):
        await relay.publish_pending()

    assert await pending(database) == 10  # nothing marked, though five records went out
    async with database.transaction() as session:
        await session.execute(update(OutboxRow).where(OutboxRow.id == sixth.id).values(payload=original_payload))
    assert await relay.publish_pending() == (10, False)
    on_topic = await topic_order(kafka_bootstrap, topic, 15)  # the first five twice
    assert {key: first_copies(numbers) for key, numbers in on_topic.items()} == await id_order(database)
