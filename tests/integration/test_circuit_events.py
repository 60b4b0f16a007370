"""A provider outage is announced on `provider.circuit_changed` through the outbox and its relay:
exactly one `open` when the worker's circuit opens, none when a failed trial re-opens it, and
one `closed` when it finally closes, each keyed by the platform."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import select

from schemas import ProviderCircuitChanged
from stream_app import TokenService
from stream_app.db.models import OutboxRow
from stream_app.engine.breaker import CircuitState
from stream_app.kafka_client import ensure_topics
from stream_app.publisher import KafkaPublisher
from stream_app.relay import OutboxRelay
from stream_app.sandbox import SandboxServer
from tests.integration.conftest import ServiceFactory
from tests.support.connections import seed_connection
from tests.support.kafka import TopicReader

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

COOL_DOWN = 1.0
TOPIC_SETTINGS = (
    "topic_connection_created",
    "topic_token_expiring",
    "topic_token_refreshed",
    "topic_token_needs_reauth",
    "topic_token_refresh_failed",
    "topic_connection_disconnected",
    "topic_token_revoked",
    "topic_provider_circuit_changed",
)


@pytest.fixture
async def service(
    make_service: ServiceFactory, own_database_url: str, kafka_bootstrap: str
) -> AsyncIterator[TokenService]:
    """A service on a database of its own (its relay meets only this test's rows), every topic
    of its own, created as the worker creates them; deleted afterwards."""
    suffix = uuid.uuid4().hex[:8]
    names = {field: f"{field.removeprefix('topic_').replace('_', '.')}.{suffix}" for field in TOPIC_SETTINGS}
    service = make_service(
        database_url=own_database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        refresh_max_attempts=0,
        circuit_min_calls=3,
        circuit_cool_down_seconds=COOL_DOWN,
        **names,
    )
    await ensure_topics(service.settings)
    yield service
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([name for name in await admin.list_topics() if suffix in name])
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def running_relay(service: TokenService) -> AsyncIterator[None]:
    """The worker's relay (agents/outbox.py): woken by every outbox write, publishing to Kafka."""
    publisher = KafkaPublisher(service.settings)
    relay = OutboxRelay(service.database, publisher.send_many)
    service.on_outbox_write(relay.wake)
    task = asyncio.create_task(relay.run(poll_interval=5.0))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await publisher.stop()


async def test_an_outage_is_one_open_event_then_one_closed_event_keyed_by_the_platform(
    service: TokenService, sandbox: SandboxServer, kafka_bootstrap: str
) -> None:
    topic = service.settings.topic_provider_circuit_changed
    users = [
        (await seed_connection(service.database, service.cipher, sandbox, "twitch", expires_in=timedelta(minutes=3)))[0]
        for _ in range(6)
    ]
    engine = service.engine
    async with running_relay(service), TopicReader(kafka_bootstrap, [topic]) as reader:
        sandbox.state.add_fault({"platform": "twitch", "mode": "server_error", "count": 1000})
        for user in users[:3]:  # three 5xx open it
            assert (await engine.refresh(user, "twitch", trigger="on_demand")).outcome == "failed"
        assert (await engine.refresh(users[3], "twitch", trigger="on_demand")).reason == "circuit_open"
        await asyncio.sleep(COOL_DOWN)
        # The trial fails: the circuit opens again, and that is no new event.
        assert (await engine.refresh(users[4], "twitch", trigger="on_demand")).outcome == "failed"
        assert engine.circuit_state("twitch") is CircuitState.OPEN
        sandbox.state.clear_faults()
        await asyncio.sleep(COOL_DOWN)
        assert (await engine.refresh(users[5], "twitch", trigger="on_demand")).outcome == "refreshed"
        assert engine.circuit_state("twitch") is CircuitState.CLOSED

        await reader.wait_for(lambda _, event: event.get("state") == "closed", timeout=30)

    # One key, one partition, published in outbox order: whatever was written before the
    # closing (a re-open's event, say) was read before it.
    assert [(record_topic, key) for record_topic, key, _ in reader.records] == [(topic, b"twitch")] * 2
    opening, closing = (ProviderCircuitChanged.model_validate(json.loads(value or b"")) for *_, value in reader.records)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    assert (opening.state, opening.platform, opening.worker, opening.cool_down_seconds, opening.open_seconds) == (
        "open",
        "twitch",
        worker,
        COOL_DOWN,
        None,
    )
    assert (closing.state, closing.platform, closing.worker, closing.cool_down_seconds) == (
        "closed",
        "twitch",
        worker,
        None,
    )
    # Timed from the first opening, not from the failed trial's re-opening.
    assert closing.open_seconds is not None and closing.open_seconds >= 2 * COOL_DOWN
    assert closing.occurred_at - opening.occurred_at >= timedelta(seconds=2 * COOL_DOWN)
    async with service.database.sessions() as session:
        rows = (await session.execute(select(OutboxRow.published_at).where(OutboxRow.topic == topic))).all()
    assert len(rows) == 2 and all(published_at is not None for (published_at,) in rows)
