"""The notifier as a process: a graceful stop, giving up on a delivery that fails too long, its
probes and metrics over HTTP, and the SQLite store the demo runs on."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from stream_app.notify.channel import DeliveryFailed, Route
from stream_app.notify.notice import Notice
from stream_app.notify.settings import NotifyConfigurationError
from stream_app.notify.store import Store
from stream_app.notify.worker import Notifier
from tests.integration.test_notify_core import (
    Clock,
    RecordingChannel,
    Setup,
    eventually,
    eventually_async,
    metric,
    notify_database_url,
    running,
    setup,
)
from tests.support.infra import free_port
from tests.support.kafka import TopicReader, create_topics
from tests.support.notify_events import needs_reauth

__all__ = ["notify_database_url", "setup"]  # the fixtures

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def test_a_stop_lets_the_send_in_flight_finish_and_hands_back_the_queued_ones(setup: Setup) -> None:
    in_flight, finish = asyncio.Event(), asyncio.Event()

    async def slow(notice: Notice, call: int) -> None:
        in_flight.set()
        await finish.wait()

    channel = RecordingChannel(behaviour=slow)
    events = [needs_reauth() for _ in range(3)]
    await setup.publish(*events)
    notifier = Notifier(setup.settings(notify_senders_per_channel=1), [channel])
    task = asyncio.create_task(notifier.run())
    await asyncio.wait_for(in_flight.wait(), 15)
    notifier.stop()
    # The queued ones are handed back while the one in flight is still being sent.
    await eventually_async(lambda: _handed_back(setup, 2), what="the queued ones handed back")
    assert not task.done()
    finish.set()
    await asyncio.wait_for(task, 15)
    assert len(channel.sent) == 1
    rows = {row.notice_id: row for row in await setup.rows(channel="rec")}
    assert rows[channel.sent[0].notice_id].status == "sent"
    others = [row for notice_id, row in rows.items() if notice_id != channel.sent[0].notice_id]
    assert [(row.status, row.lease_owner) for row in others] == [("pending", None), ("pending", None)]


async def _handed_back(setup: Setup, count: int) -> bool:
    rows = await setup.rows(channel="rec")
    return sum(row.status == "pending" and row.lease_owner is None for row in rows) == count


async def test_a_delivery_failing_past_the_give_up_age_is_dead_lettered(setup: Setup) -> None:
    async def unavailable(notice: Notice, call: int) -> None:
        raise DeliveryFailed("receiver answered HTTP 503")

    clock = Clock()
    channel = RecordingChannel(behaviour=unavailable)
    settings = setup.settings(notify_give_up_hours=1, notify_retry_base_seconds=30, notify_retry_max_seconds=60)
    async with TopicReader(setup.bootstrap, [setup.dlq]) as reader:
        async with running(settings, [channel], now=clock) as notifier:
            await setup.publish(needs_reauth())
            await eventually_async(lambda: _rescheduled_once(setup), what="the first failure rescheduled")
            assert metric(notifier, "failed", "rec") == 1
            clock.offset = timedelta(hours=2)
            letter = await reader.wait_for(lambda _t, r: r.get("what") == "delivery", timeout=15)
    assert letter["reason"] == "gave up after 2 attempts in 1 h: receiver answered HTTP 503"
    assert letter["attempts"] == 2 and len(channel.calls) == 2


async def _rescheduled_once(setup: Setup) -> bool:
    return [(row.status, row.attempts) for row in await setup.rows(channel="rec")] == [("pending", 1)]


async def test_probes_and_metrics_over_http(setup: Setup) -> None:
    now = datetime.now(UTC)
    quiet = f"{now - timedelta(hours=1):%H:%M}-{now + timedelta(hours=1):%H:%M}"
    held = RecordingChannel(name="mail", user_facing=True)
    told = RecordingChannel(name="hook")
    port = free_port()
    settings = setup.settings(notify_http_port=port, notify_http_host="127.0.0.1", notify_quiet_hours=quiet)
    async with running(settings, [held, told]) as notifier, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{port}"

        async def page(path: str) -> tuple[int, str]:
            async with http.get(base + path) as response:
                return response.status, await response.text()

        await eventually(lambda: notifier.http is not None and notifier.intake is not None and notifier.intake.started)
        await setup.publish(needs_reauth())
        await eventually(lambda: len(told.sent) == 1)
        assert await page("/healthz") == (200, '{"status": "ok"}')
        assert (await page("/readyz"))[0] == 200
        deadline = asyncio.get_running_loop().time() + 10
        while 'token_refresh_notify_queued{channel="mail"} 1.0' not in (await page("/metrics"))[1]:
            assert asyncio.get_running_loop().time() < deadline, "the held notice is not shown queued"
            await asyncio.sleep(0.1)
        status, text = await page("/metrics")
    assert status == 200
    assert 'token_refresh_notify_sent_total{channel="hook"} 1.0' in text
    assert 'token_refresh_notify_queued{channel="hook"} 0.0' in text
    assert 'token_refresh_notify_deduplicated_total{channel="mail"} 0.0' in text


async def test_the_demos_sqlite_store_delivers_once_and_deduplicates_a_replay(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    setup = Setup(kafka_bootstrap, f"sqlite+aiosqlite:///{tmp_path / 'token_refresh.db'}")
    await create_topics(kafka_bootstrap, [*setup.topics.values(), setup.dlq], partitions=2)
    channel = RecordingChannel(routes={"needs_reauth": Route.NOW})
    events = [needs_reauth(uuid.uuid4()) for _ in range(5)]
    await setup.publish(*events)
    async with running(setup.settings(), [channel]) as notifier:
        await eventually(lambda: metric(notifier, "sent", "rec") == 5, what="five sent")
    async with running(setup.settings(kafka_app_id=f"again-{setup.suffix}"), [channel]) as notifier:
        await eventually(lambda: metric(notifier, "deduplicated", "rec") == 5, what="five deduplicated")
    assert len(channel.sent) == 5


async def test_token_refresh_notify_runs_until_sigterm_and_stops_cleanly(setup: Setup) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": setup.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": setup.bootstrap,
        "KAFKA_APP_ID": f"cli-{setup.suffix}",
        "NOTIFY_DLQ_TOPIC": setup.dlq,
        "NOTIFY_HTTP_HOST": "127.0.0.1",
        "NOTIFY_HTTP_PORT": str(port),
        **{f"TOPIC_{name.replace('.', '_').upper()}": topic for name, topic in setup.topics.items()},
    }
    with subprocess.Popen(
        [sys.executable, "-m", "stream_app", "notify"], env=env, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            async with aiohttp.ClientSession() as http:
                deadline = asyncio.get_running_loop().time() + 30
                while True:
                    assert process.poll() is None, "the notifier exited"
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                            if response.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        pass
                    assert asyncio.get_running_loop().time() < deadline, "never ready"
                    await asyncio.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(asyncio.to_thread(process.wait), 20)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.stderr is not None
        log = process.stderr.read()
    assert code == 0
    assert "notify: running (group cli-" in log and "notify: stopped" in log


async def test_a_channel_keeps_dispatching_after_the_store_was_away(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = RecordingChannel()
    failures = 0
    claim_due = Store.claim_due

    async def store_away(self: Store, **kwargs: object) -> object:
        nonlocal failures
        failures += 1
        raise ConnectionError("the database is away")

    monkeypatch.setattr(Store, "claim_due", store_away)
    async with running(setup.settings(), [channel]):
        await setup.publish(needs_reauth())
        await eventually(lambda: failures >= 3, what="claims failing")
        monkeypatch.setattr(Store, "claim_due", claim_due)
        await eventually(lambda: len(channel.sent) == 1, what="sent once the store is back")


async def test_a_port_in_use_stops_the_start_in_one_line(setup: Setup) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = setup.settings(notify_http_port=port, notify_http_host="127.0.0.1")
        with pytest.raises(NotifyConfigurationError) as raised:
            await asyncio.wait_for(Notifier(settings, [RecordingChannel()]).run(), 20)
    assert str(raised.value).startswith(f"NOTIFY_HTTP_PORT: cannot listen on 127.0.0.1:{port} (")
