"""The signed webhook behind the notifier's core, on the real broker and Postgres: one request per
outcome that the independent Standard Webhooks implementation verifies, a recovery announced as
connection.recovered, a replay that sends nothing, a 503 waited out, a 410 dead-lettered."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from schemas import TokenRefreshed
from stream_app.notify.notice import recovered_notice_id
from stream_app.notify.webhook import WebhookChannel, WebhookSettings
from tests.integration.test_notify_core import SECRET, Setup, eventually, metric, running
from tests.integration.test_notify_webhook import Received, Receiver, receiver
from tests.support.kafka import TopicReader, create_topics
from tests.support.notify_events import needs_reauth

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

OLD = "whsec_" + base64.b64encode(os.urandom(32)).decode()
NEW = "whsec_" + base64.b64encode(os.urandom(32)).decode()
QUERY_SECRET = "q" + uuid.uuid4().hex


@pytest.fixture
async def setup(kafka_bootstrap: str, own_database_url: str) -> Setup:
    made = Setup(kafka_bootstrap, own_database_url)
    await create_topics(kafka_bootstrap, [*made.topics.values(), made.dlq], partitions=2)
    return made


@pytest.fixture
async def endpoint() -> AsyncIterator[Receiver]:
    async with receiver() as box:
        yield box


def webhook(endpoint: Receiver) -> WebhookChannel:
    settings = WebhookSettings(
        _env_file=None, url=f"{endpoint.url}/hooks?key={QUERY_SECRET}", allow_http=True, secrets=f"{OLD},{NEW}"
    )
    return WebhookChannel(settings)


def verified(request: Received) -> Any:
    payloads = [Webhook(secret).verify(request.body, request.headers) for secret in (OLD, NEW)]
    assert payloads[0] == payloads[1]
    return payloads[0]


def assert_nothing_secret(*texts: str) -> None:
    everything = "\n".join(texts)
    for needle in (SECRET, OLD, NEW, OLD.removeprefix("whsec_"), NEW.removeprefix("whsec_")):
        assert needle not in everything


def told(endpoint: Receiver) -> str:
    return "\n".join(f"{r.headers}\n{r.body.decode()}" for r in endpoint.received)


async def test_a_problem_and_its_recovery_arrive_signed_once_and_a_replay_sends_nothing(
    setup: Setup, endpoint: Receiver
) -> None:
    problem = needs_reauth()
    fixed = TokenRefreshed(
        user_id=problem.user_id,
        platform="spotify",
        occurred_at=problem.occurred_at + timedelta(seconds=1),
        token_expires_at=None,
        expires_in=3600,
        attempts=1,
        duration_ms=40,
        refresh_token_rotated=False,
        reason="on_demand",
    )
    async with running(setup.settings(), [webhook(endpoint)]) as notifier:
        await setup.publish(problem)
        await eventually(lambda: len(endpoint.received) == 1, what="the problem's webhook")
        await setup.publish(fixed)
        await eventually(lambda: len(endpoint.received) == 3, what="the refresh's and the recovery's webhooks")
        await eventually(lambda: metric(notifier, "sent", "webhook") == 3, what="three counted")

    by_id = {request.headers["webhook-id"]: verified(request) for request in endpoint.received}
    assert by_id[str(problem.event_id)]["type"] == "token.needs_reauth"
    assert by_id[str(problem.event_id)]["data"] == json.loads(problem.model_dump_json())
    assert by_id[str(fixed.event_id)]["type"] == "token.refreshed"
    recovery = by_id[str(recovered_notice_id(fixed.event_id))]
    assert recovery["type"] == "connection.recovered" and recovery["data"]["event_id"] == str(fixed.event_id)
    assert {request.path for request in endpoint.received} == {f"/hooks?key={QUERY_SECRET}"}

    replay = setup.settings(kafka_app_id=f"replay-{setup.suffix}")
    async with running(replay, [webhook(endpoint)]) as notifier:
        await eventually(lambda: metric(notifier, "deduplicated", "webhook") >= 2, what="duplicates counted")
    assert len(endpoint.received) == 3
    assert_nothing_secret(told(endpoint))


async def test_a_503_is_waited_out_and_a_410_is_dead_lettered(setup: Setup) -> None:
    answers = iter([web.Response(status=503, headers={"Retry-After": "1"}), web.Response(status=204)])

    async def busy_once(request: web.Request) -> web.StreamResponse:
        return next(answers)

    async def gone(request: web.Request) -> web.StreamResponse:
        return web.Response(status=410, text=f"gone {request.path_qs}")

    retried, refused = needs_reauth(), needs_reauth()
    async with receiver(busy_once) as busy, receiver(gone) as moved:
        async with running(setup.settings(), [webhook(busy)]) as notifier:
            await setup.publish(retried)
            await eventually(lambda: metric(notifier, "sent", "webhook") == 1, what="sent after the 503")
        first, second = busy.received
        assert first.headers["webhook-id"] == second.headers["webhook-id"] == str(retried.event_id)
        assert int(second.headers["webhook-timestamp"]) >= int(first.headers["webhook-timestamp"]) + 1
        assert verified(second) == verified(first)

        async with TopicReader(setup.bootstrap, [setup.dlq]) as reader:
            other = setup.settings(kafka_app_id=f"gone-{setup.suffix}")
            async with running(other, [webhook(moved)]):
                await setup.publish(refused)
                letter = await reader.wait_for(
                    lambda _t, r: r.get("what") == "delivery" and r.get("notice_id") == str(refused.event_id),
                    timeout=20,
                )
    assert letter["reason"] == f"webhook endpoint {moved.url} answered HTTP 410"
    assert letter["channel"] == "webhook" and letter["attempts"] == 1
    dead_letters = "\n".join((value or b"").decode() for _topic, _key, value in reader.records)
    assert QUERY_SECRET not in dead_letters
    assert_nothing_secret(dead_letters, told(busy), told(moved))
