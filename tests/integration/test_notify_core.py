"""The notifier's core on the real broker and Postgres, with recording channels of the test's own:
delivery once, replays deduplicated, offsets committed only after the store, retries, Retry-After,
dead letters, a channel down beside one up, a crash while a lease is held.

Helpers here are shared with the other test_notify_core_* modules.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import inspect, select
from sqlalchemy.engine import make_url

from stream_app.notify.channel import DeliveryFailed, Route
from stream_app.notify.notice import Notice
from stream_app.notify.settings import NotifySettings
from stream_app.notify.store import Store, deliveries
from stream_app.notify.worker import Notifier
from tests.support.databases import administer, database_url, drop_database
from tests.support.infra import require_postgres
from tests.support.kafka import TopicReader, create_topics, produce
from tests.support.notify_events import needs_reauth

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

# A token-shaped secret in the events' test data: it must never reach a channel.
SECRET = "ya29.a0AfH6SMBx-secret-access-token-do-not-leak"
TOPICS = (
    "token.refreshed",
    "token.needs_reauth",
    "token.refresh_failed",
    "token.revoked",
    "provider.circuit_changed",
    "connection.created",
)

Behaviour = Callable[[Notice, int], Awaitable[None]]


@dataclass
class RecordingChannel:
    """A channel that records what it was asked to send; ``behaviour`` (notice, call number)
    may raise DeliveryFailed or hang."""

    name: str = "rec"
    user_facing: bool = False
    digest_window_seconds: float = 0.0
    routes: Mapping[str, Route] = field(default_factory=lambda: {"needs_reauth": Route.NOW})
    behaviour: Behaviour | None = None
    calls: list[tuple[float, Notice]] = field(default_factory=list)
    sent: list[Notice] = field(default_factory=list)
    digests: list[tuple[str, list[Notice]]] = field(default_factory=list)
    digest_calls: list[list[Notice]] = field(default_factory=list)

    def route(self, notice: Notice) -> Route:
        return self.routes.get(notice.kind, Route.SKIP)

    async def send(self, notice: Notice) -> None:
        self.calls.append((time.monotonic(), notice))
        if self.behaviour is not None:
            await self.behaviour(notice, len(self.calls))
        self.sent.append(notice)

    async def send_digest(self, platform: str, notices: Sequence[Notice]) -> None:
        self.calls.append((time.monotonic(), notices[0]))
        self.digest_calls.append(list(notices))
        if self.behaviour is not None:
            await self.behaviour(notices[0], len(self.calls))
        self.digests.append((platform, list(notices)))

    async def aclose(self) -> None:
        pass

    def everything_told(self) -> str:
        return json.dumps([[str(n.event), n.kind] for n in self.sent] + [[str(d)] for d in self.digests])


@dataclass
class Clock:
    """A settable clock for the notifier (quiet hours, windows); starts at the real time."""

    offset: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


class Setup:
    def __init__(self, bootstrap: str, database_url: str) -> None:
        self.bootstrap, self.database_url = bootstrap, database_url
        self.suffix = uuid.uuid4().hex[:10]
        self.topics = {name: f"{name}.{self.suffix}" for name in TOPICS}
        self.dlq = f"notify.dlq.{self.suffix}"

    def settings(self, **overrides: Any) -> NotifySettings:
        values: dict[str, Any] = {
            "database_url": self.database_url,
            "kafka_bootstrap_servers": self.bootstrap,
            "kafka_app_id": f"notify-test-{self.suffix}",
            "kafka_topic_partitions": 2,
            "notify_dlq_topic": self.dlq,
            "notify_http_port": 0,
            "notify_poll_interval_seconds": 0.05,
            "notify_retry_base_seconds": 0.05,
            "notify_retry_max_seconds": 0.5,
            "notify_send_timeout_seconds": 2,
            "notify_lease_seconds": 7,
            "kafka_session_timeout_seconds": 6,
            **{f"topic_{name.replace('.', '_')}": topic for name, topic in self.topics.items()},
        }
        values.update(overrides)
        return NotifySettings(**values)

    async def publish(self, *events: Any) -> None:
        for event in events:
            await produce(self.bootstrap, self.topics[event.default_topic], [(event.key.encode(), event.to_bytes())])

    async def publish_raw(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        await produce(self.bootstrap, self.topics[topic], [(key, value)])

    async def rows(self, **where: Any) -> list[Any]:
        """The deliveries recorded (none while the notifier has not made its tables yet)."""
        store = Store(self.database_url)
        try:
            async with store.engine.connect() as connection:
                if not await connection.run_sync(lambda sync: inspect(sync).has_table("notify_deliveries")):
                    return []
                query = select(deliveries).where(*(deliveries.c[k] == v for k, v in where.items()))
                return list((await connection.execute(query)).all())
        finally:
            await store.dispose()

    async def committed(self, group: str) -> dict[str, int | None]:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            found = {}
            for name, topic in self.topics.items():
                for partition in range(2):
                    found[f"{name}/{partition}"] = await consumer.committed(TopicPartition(topic, partition))
            return found
        finally:
            await consumer.stop()


@pytest.fixture
async def notify_database_url() -> AsyncIterator[str]:
    """An empty database of this test's own on the suite's Postgres: the notifier makes its own
    tables (the service's migrations, which own_database_url runs, are not needed here)."""
    server_url = require_postgres()
    name = f"{make_url(server_url).database}_notify_{uuid.uuid4().hex[:8]}"
    await administer(server_url, f'CREATE DATABASE "{name}"')
    try:
        yield database_url(server_url, name)
    finally:
        await drop_database(server_url, name)


@pytest.fixture
async def setup(kafka_bootstrap: str, notify_database_url: str) -> Setup:
    made = Setup(kafka_bootstrap, notify_database_url)
    await create_topics(kafka_bootstrap, [*made.topics.values(), made.dlq], partitions=2)
    return made


@asynccontextmanager
async def running(settings: NotifySettings, channels: Sequence[Any], **options: Any) -> AsyncIterator[Notifier]:
    notifier = Notifier(settings, channels, **options)
    task = asyncio.create_task(notifier.run())
    try:
        yield notifier
    finally:
        notifier.stop()
        await asyncio.wait_for(task, 20)


async def eventually(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.02)


async def eventually_async(predicate: Callable[[], Awaitable[Any]], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)


def metric(notifier: Notifier, name: str, channel: str) -> float:
    value = notifier.metrics.registry.get_sample_value(f"token_refresh_notify_{name}_total", {"channel": channel})
    return value or 0.0


def assert_no_secret(*channels: RecordingChannel) -> None:
    for channel in channels:
        assert SECRET not in channel.everything_told()


# ---------------------------------------------------------------------------------------------


async def test_each_notice_is_sent_once_and_a_replay_by_a_new_group_sends_nothing(setup: Setup) -> None:
    channel = RecordingChannel()
    events = [needs_reauth() for _ in range(3)]
    await setup.publish(*events)
    async with running(setup.settings(), [channel]) as notifier:
        await eventually(lambda: metric(notifier, "sent", "rec") == 3, what="three notices sent")
    assert sorted(n.notice_id for n in channel.sent) == sorted(e.event_id for e in events)
    assert [n.event["event_id"] for n in channel.sent] == [str(n.notice_id) for n in channel.sent]

    # The topics read again from the start by another group over the same store: nothing new.
    replay = setup.settings(kafka_app_id=f"replay-{setup.suffix}")
    async with running(replay, [channel]) as notifier:
        await eventually(lambda: metric(notifier, "deduplicated", "rec") == 3, what="three duplicates counted")
    assert len(channel.sent) == 3
    rows = await setup.rows(channel="rec")
    assert {row.status for row in rows} == {"sent"} and len(rows) == 3
    assert_no_secret(channel)


class Killed(BaseException):
    """The process dying between the store's commit and the offsets' commit."""


async def test_offsets_are_committed_only_after_the_store_commit(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    channel = RecordingChannel()
    event = needs_reauth()
    await setup.publish(event)
    settings = setup.settings()

    # The store refuses the batch: nothing is committed, and the batch is read again.
    failures = 0
    original_insert = Store.insert_deliveries

    async def refusing_insert(self: Store, *args: Any, **kwargs: Any) -> Any:
        nonlocal failures
        failures += 1
        raise ConnectionError("the database is away")

    monkeypatch.setattr(Store, "insert_deliveries", refusing_insert)
    async with running(settings, [channel]):
        await eventually(lambda: failures >= 2, what="the batch tried twice")
        assert set((await setup.committed(settings.consumer_group)).values()) == {None}
        monkeypatch.setattr(Store, "insert_deliveries", original_insert)
        await eventually(lambda: len(channel.sent) == 1, what="sent once the store is back")
    committed = await setup.committed(settings.consumer_group)
    assert sum(offset or 0 for offset in committed.values()) == 1

    # A notifier killed after the store's commit, before the offsets': the next one re-reads the
    # record, finds its delivery, and sends nothing again.
    second = needs_reauth()
    original_commit = AIOKafkaConsumer.commit

    async def killed_commit(self: AIOKafkaConsumer, *args: Any, **kwargs: Any) -> None:
        raise Killed

    monkeypatch.setattr(AIOKafkaConsumer, "commit", killed_commit)
    notifier = Notifier(settings, [channel])
    task = asyncio.create_task(notifier.run())
    await setup.publish(second)
    with pytest.raises(Killed):
        await asyncio.wait_for(task, 20)
    assert len(await setup.rows(notice_id=second.event_id)) == 1  # in the store
    assert sum(offset or 0 for offset in (await setup.committed(settings.consumer_group)).values()) == 1

    monkeypatch.setattr(AIOKafkaConsumer, "commit", original_commit)
    async with running(settings, [channel]) as restarted:
        await eventually(lambda: len(channel.sent) == 2, what="the second notice sent")
        await eventually(lambda: metric(restarted, "deduplicated", "rec") == 1, what="the re-read counted")
        await eventually_async(
            lambda: _committed_total(setup, settings.consumer_group, 2), what="both offsets committed"
        )
    assert [n.notice_id for n in channel.sent] == [event.event_id, second.event_id]


async def _committed_total(setup: Setup, group: str, expected: int) -> bool:
    return sum(offset or 0 for offset in (await setup.committed(group)).values()) == expected


async def test_a_channel_that_never_answers_does_not_hold_up_another(setup: Setup) -> None:
    hang = asyncio.Event()

    async def never_answers(notice: Notice, call: int) -> None:
        await hang.wait()

    down = RecordingChannel(name="down", behaviour=never_answers)
    up = RecordingChannel(name="up")
    events = [needs_reauth() for _ in range(20)]
    async with running(setup.settings(notify_send_timeout_seconds=3, notify_lease_seconds=8), [down, up]):
        await setup.publish(*events)
        await eventually(lambda: len(up.sent) == 20, what="every notice on the working channel")
        first_call = min(at for at, _ in up.calls)
        last_call = max(at for at, _ in up.calls)
        # All of them went out while the other channel's first sends were still hanging.
        assert last_call - first_call < 3
        assert down.sent == []
        hang.set()  # the hanging sends end (the stop need not wait for their timeout)
    assert_no_secret(up)


async def test_a_retry_after_is_honoured(setup: Setup) -> None:
    async def throttled_once(notice: Notice, call: int) -> None:
        if call == 1:
            raise DeliveryFailed("receiver answered HTTP 429", retry_after=1.0)

    channel = RecordingChannel(behaviour=throttled_once)
    async with running(setup.settings(), [channel]) as notifier:
        await setup.publish(needs_reauth())
        await eventually(lambda: metric(notifier, "sent", "rec") == 1, what="sent after the wait")
        assert metric(notifier, "failed", "rec") == 1
    (first, _), (second, _) = channel.calls
    assert second - first >= 1.0  # the backoff alone would have retried within 0.05 s
    assert second - first < 4


async def test_a_permanent_failure_is_dead_lettered_with_its_reason(setup: Setup) -> None:
    async def refused(notice: Notice, call: int) -> None:
        raise DeliveryFailed("receiver answered HTTP 400", permanent=True)

    channel = RecordingChannel(behaviour=refused)
    event = needs_reauth()
    async with TopicReader(setup.bootstrap, [setup.dlq]) as reader:
        async with running(setup.settings(), [channel]) as notifier:
            await setup.publish(event)
            letter = await reader.wait_for(lambda _topic, record: record.get("what") == "delivery", timeout=15)
            await eventually(lambda: metric(notifier, "dead_lettered", "rec") == 1, what="counted")
    assert letter["reason"] == "receiver answered HTTP 400"
    assert letter["notice_id"] == str(event.event_id)
    assert letter["channel"] == "rec" and letter["kind"] == "needs_reauth" and letter["attempts"] == 1
    assert len(channel.calls) == 1  # not retried
    (row,) = await setup.rows(notice_id=event.event_id)
    assert row.status == "dead" and row.last_error == "receiver answered HTTP 400"


async def test_transient_failures_are_retried_after_growing_jittered_delays(setup: Setup) -> None:
    async def fails_four_times(notice: Notice, call: int) -> None:
        if call <= 4:
            raise DeliveryFailed("receiver answered HTTP 503")

    channel = RecordingChannel(behaviour=fails_four_times)
    settings = setup.settings(notify_retry_base_seconds=0.1, notify_retry_max_seconds=10)
    async with running(settings, [channel], rng=random.Random(11)):
        await setup.publish(needs_reauth())
        await eventually(lambda: len(channel.sent) == 1, what="sent on the fifth attempt")
    gaps = [later - earlier for (earlier, _), (later, _) in zip(channel.calls, channel.calls[1:], strict=False)]
    expected = random.Random(11)
    delays = [expected.uniform(0, 0.1 * 2 ** (attempt - 1)) for attempt in range(1, 5)]
    assert len(gaps) == 4
    for gap, delay in zip(gaps, delays, strict=True):
        assert gap >= delay - 0.01
        assert gap < delay + 1.0


async def test_malformed_records_are_dead_lettered_without_their_value(setup: Setup) -> None:
    channel = RecordingChannel()
    key = f"{uuid.uuid4()}:spotify".encode()
    value = json.dumps({"event_type": "token.needs_reauth", "access_token": SECRET}).encode()
    good = needs_reauth()
    async with TopicReader(setup.bootstrap, [setup.dlq]) as reader:
        async with running(setup.settings(), [channel]) as notifier:
            await setup.publish_raw("token.needs_reauth", key, value)
            await setup.publish_raw("token.refreshed", b"\xff\xfe", b"not json at all")
            await setup.publish(good)
            first = await reader.wait_for(lambda _t, r: r.get("what") == "record" and r["value_size"] == len(value))
            second = await reader.wait_for(lambda _t, r: r.get("what") == "record" and r["key"] is None)
            await eventually(lambda: len(channel.sent) == 1, what="the good record still delivered")
            malformed = notifier.metrics.registry.get_sample_value(
                "token_refresh_notify_malformed_records_total", {"topic": setup.topics["token.needs_reauth"]}
            )
            assert malformed == 1
    assert first["topic"] == setup.topics["token.needs_reauth"] and first["key"] == key.decode()
    assert first["reason"].startswith("not a token.needs_reauth event:")
    assert isinstance(first["partition"], int) and isinstance(first["offset"], int)
    assert second["topic"] == setup.topics["token.refreshed"] and second["key_size"] == 2
    assert second["reason"].startswith("not JSON")
    for _topic, _key, record in reader.records:
        assert SECRET.encode() not in (record or b"") and b"not json at all" not in (record or b"")
    assert channel.sent[0].notice_id == good.event_id
    assert_no_secret(channel)


_HANGING_NOTIFIER = """
import asyncio, sys
from stream_app.notify.channel import Route
from stream_app.notify.settings import NotifySettings
from stream_app.notify.worker import Notifier

class Hanging:
    name = "rec"
    user_facing = False
    digest_window_seconds = 0.0
    def route(self, notice):
        return Route.NOW if notice.kind == "needs_reauth" else Route.SKIP
    async def send(self, notice):
        print("sending", flush=True)
        await asyncio.Event().wait()
    async def send_digest(self, platform, notices):
        raise NotImplementedError
    async def aclose(self):
        pass

asyncio.run(Notifier(NotifySettings.model_validate_json(sys.argv[1]), [Hanging()]).run())
"""


async def test_a_notifier_killed_while_sending_is_replaced_once_its_lease_lapses(setup: Setup) -> None:
    settings = setup.settings(notify_send_timeout_seconds=30, notify_lease_seconds=36)
    event = needs_reauth()
    await setup.publish(event)
    raw = settings.model_dump(mode="json")
    raw["database_url"] = setup.database_url
    with subprocess.Popen(
        [sys.executable, "-c", _HANGING_NOTIFIER, json.dumps(raw)], stdout=subprocess.PIPE
    ) as process:
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 30)
            assert line == b"sending\n"
        finally:
            process.kill()
    (row,) = await setup.rows(notice_id=event.event_id)
    assert row.status == "sending"

    # Another notifier finds the delivery leased: it sends it once the lease lapses (a clock
    # moved past the lease, rather than waiting for it).
    channel = RecordingChannel()
    clock = Clock(offset=timedelta(seconds=0))
    # (A group of its own: the killed one's would wait out the dead member's session first.)
    successor = setup.settings(kafka_app_id=f"successor-{setup.suffix}")
    async with running(successor, [channel], now=clock):
        clock.offset = timedelta(seconds=40)
        await eventually(lambda: len(channel.sent) == 1, what="re-sent after the lease lapsed")
    (row,) = await setup.rows(notice_id=event.event_id)
    assert row.status == "sent"
