"""The notifier end to end (issue 11's "done when"): a real worker refreshes against the sandbox on
the real broker and Postgres, and a real notifier process (`token-refresh notify`) tells a real SMTP
server, a Slack-like receiver and the product's webhook endpoint.

- a revoked grant gives exactly one email, one Slack digest line and one signed webhook that verifies
  with an independent implementation (the `standardwebhooks` library);
- a replay of the topics (a new consumer group over the same store) sends nothing new;
- an SMTP server that refuses for a minute delays the email but loses nothing;
- nothing any channel received holds a token.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from standardwebhooks.webhooks import Webhook

from tests.integration.conftest import Stack
from tests.support.infra import free_port
from tests.support.kafka import TopicReader, create_topics, produce
from tests.support.leaks import find, needles
from tests.support.notify_receivers import HttpReceiver, SmtpSink
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"e2e-webhook-secret-of-32-bytes!!").decode()
SMTP_REFUSAL_SECONDS = 60.0


@pytest.fixture(scope="module")
def stack(own_stack: Stack) -> Stack:
    return own_stack


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture(scope="module")
def http_receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def users_table(module_database_url: str) -> str:
    """The product's own users table (the seed's), which the email channel's lookup reads."""

    async def create() -> None:
        engine = create_async_engine(module_database_url)
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE users (id uuid PRIMARY KEY, email text NOT NULL, name text)"))
        await engine.dispose()

    asyncio.run(create())
    return module_database_url


@pytest.fixture(scope="module")
def notifier_env(stack: Stack, smtp: SmtpSink, http_receiver: HttpReceiver, users_table: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    dead_letters = f"notify.dlq.{suffix}"
    asyncio.run(create_topics(stack.bootstrap, [dead_letters]))
    return {
        "DATABASE_URL": users_table,
        "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
        "KAFKA_APP_ID": f"notify-e2e-{suffix}",
        "LOG_LEVEL": "DEBUG",
        **{f"TOPIC_{name.upper().replace('.', '_')}": topic for name, topic in stack.topics.items()},
        "NOTIFY_DLQ_TOPIC": dead_letters,
        "NOTIFY_HTTP_HOST": "127.0.0.1",
        "NOTIFY_HTTP_PORT": str(free_port()),
        "NOTIFY_RETRY_BASE_SECONDS": "1",
        "NOTIFY_RETRY_MAX_SECONDS": "4",
        "NOTIFY_SEND_TIMEOUT_SECONDS": "10",
        "NOTIFY_LEASE_SECONDS": "20",
        "NOTIFY_EMAIL_SMTP_HOST": "127.0.0.1",
        "NOTIFY_EMAIL_SMTP_PORT": str(smtp.port),
        "NOTIFY_EMAIL_SMTP_SECURITY": "none",
        "NOTIFY_EMAIL_FROM": "Token Refresh <noreply@example.com>",
        "NOTIFY_EMAIL_LOOKUP_SQL": "SELECT email, name FROM users WHERE id = :user_id",
        "NOTIFY_SLACK_WEBHOOK_URL": f"{http_receiver.url}/slack",
        "NOTIFY_SLACK_DIGEST_MINUTES": "60",
        "NOTIFY_WEBHOOK_URL": f"{http_receiver.url}/hook",
        "NOTIFY_WEBHOOK_ALLOW_HTTP": "true",
        "NOTIFY_WEBHOOK_SECRETS": WEBHOOK_SECRET,
    }


@pytest.fixture(scope="module")
def notifier(notifier_env: dict[str, str], stack: Stack) -> Iterator[WorkerProcess]:
    process = WorkerProcess(notifier_env, stack.worker.log_path.with_name("notify.log"), command="notify").start()
    try:
        process.wait_until_logged("notify: running", timeout=60)
        yield process
    finally:
        process.stop()


@pytest.fixture
async def outcomes(stack: Stack) -> AsyncIterator[TopicReader]:
    async with stack.reader("token.needs_reauth", "token.refreshed") as reader:
        yield reader


async def revoked_connection(stack: Stack, users_database: str, platform: str = "spotify") -> tuple[uuid.UUID, str]:
    """A user of the product whose grant the provider has revoked; (user id, their address)."""
    grant = stack.sandbox.create_grant(platform)
    stack.sandbox.state.revoke(grant["grant_id"])
    event, _ = stack.connection_event(platform, expires_in=timedelta(seconds=5), grant=grant)
    address = f"user-{event.user_id.hex[:8]}@example.com"
    engine = create_async_engine(users_database)
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO users (id, email, name) VALUES (:id, :email, 'Ada')"),
            {"id": event.user_id, "email": address},
        )
    await engine.dispose()
    await produce(stack.bootstrap, stack.topics["connection.created"], [(event.key.encode(), event.to_bytes())])
    return event.user_id, address


async def eventually(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout:g} s"
        await asyncio.sleep(0.25)


def metric(url: str, name: str, channel: str) -> float:
    body = httpx.get(url, timeout=5).text
    found = re.search(rf'^{name}\{{channel="{channel}"\}} (\S+)$', body, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def webhooks_of(receiver: HttpReceiver, user_id: uuid.UUID) -> list[dict[str, object]]:
    return [
        json.loads(request.body)
        for request in receiver.received("/hook")
        if json.loads(request.body)["data"]["user_id"] == str(user_id)
    ]


def settled(notifier: WorkerProcess) -> bool:
    """Nothing of any channel waits to be sent (digests excepted: they wait for their window)."""
    url = f"http://127.0.0.1:{notifier.env['NOTIFY_HTTP_PORT']}/metrics"
    return all(metric(url, "token_refresh_notify_queued", channel) == 0 for channel in ("email", "webhook"))


async def test_a_revoked_grant_gives_one_email_one_digest_line_and_one_verified_webhook(
    stack: Stack,
    notifier: WorkerProcess,
    smtp: SmtpSink,
    http_receiver: HttpReceiver,
    users_table: str,
    outcomes: TopicReader,
) -> None:
    user_id, address = await revoked_connection(stack, users_table)
    reauth = await outcomes.wait_for(
        lambda topic, event: event["user_id"] == str(user_id) and event["event_type"] == "token.needs_reauth"
    )

    await eventually(lambda: smtp.to(address), 60, "the re-auth email arrived")
    await eventually(lambda: webhooks_of(http_receiver, user_id), 60, "the signed webhook arrived")
    await eventually(lambda: http_receiver.received("/slack"), 60, "the Slack digest arrived")
    await eventually(lambda: settled(notifier), 30, "the notifier settled")
    await asyncio.sleep(2)  # anything sent twice would have arrived by now

    [email] = smtp.to(address)
    assert "Spotify" in email["Subject"]
    assert email["Auto-Submitted"] == "auto-generated"
    assert email.get_body(preferencelist=("plain",)) is not None
    assert email.get_body(preferencelist=("html",)) is not None

    [digest] = http_receiver.received("/slack")
    payload = json.loads(digest.body)
    assert "1 Spotify connection needs re-auth" in payload["text"], payload["text"]
    assert isinstance(payload["blocks"], list) and payload["blocks"]

    [hook] = [r for r in http_receiver.received("/hook") if json.loads(r.body)["data"]["user_id"] == str(user_id)]
    assert hook.headers["webhook-id"] == reauth["event_id"]
    verified = Webhook(WEBHOOK_SECRET).verify(hook.body, hook.headers)
    assert verified["type"] == "token.needs_reauth"
    assert verified["data"]["event_id"] == reauth["event_id"]

    everything = [*smtp.raw, *(request.body for request in http_receiver.requests)]
    everything += [json.dumps(request.headers).encode() for request in http_receiver.requests]
    assert not find(needles(stack.sandbox), {"channels": everything})


async def test_a_replay_of_the_topics_sends_nothing_new(
    stack: Stack,
    notifier: WorkerProcess,
    notifier_env: dict[str, str],
    smtp: SmtpSink,
    http_receiver: HttpReceiver,
    users_table: str,
    outcomes: TopicReader,
) -> None:
    user_id, address = await revoked_connection(stack, users_table, "discord")
    await eventually(lambda: smtp.to(address) and webhooks_of(http_receiver, user_id), 60, "the first delivery")
    await eventually(lambda: settled(notifier), 30, "the notifier settled")
    before = (len(smtp.raw), len(http_receiver.requests))
    delivered_webhooks = len(http_receiver.received("/hook"))

    # A second notifier in a consumer group of its own reads every topic from its first offset.
    replay_env = {
        **notifier_env,
        "KAFKA_APP_ID": notifier_env["KAFKA_APP_ID"] + "-replay",
        "NOTIFY_HTTP_PORT": str(free_port()),
    }
    replayer = WorkerProcess(replay_env, stack.worker.log_path.with_name("notify-replay.log"), command="notify").start()
    try:
        replayer.wait_until_logged("notify: running", timeout=60)
        url = f"http://127.0.0.1:{replay_env['NOTIFY_HTTP_PORT']}/metrics"
        await eventually(
            lambda: metric(url, "token_refresh_notify_deduplicated_total", "webhook") >= delivered_webhooks,
            60,
            "the replay met every webhook delivery already made",
        )
        assert metric(url, "token_refresh_notify_deduplicated_total", "email") >= 2
        await asyncio.sleep(3)
        assert (len(smtp.raw), len(http_receiver.requests)) == before
        assert metric(url, "token_refresh_notify_sent_total", "webhook") == 0
        assert metric(url, "token_refresh_notify_sent_total", "email") == 0
    finally:
        replayer.stop()


async def test_an_smtp_server_refusing_for_a_minute_delays_the_email_and_loses_nothing(
    stack: Stack,
    notifier: WorkerProcess,
    notifier_env: dict[str, str],
    smtp: SmtpSink,
    users_table: str,
    outcomes: TopicReader,
) -> None:
    smtp.refuse_until = time.monotonic() + SMTP_REFUSAL_SECONDS
    user_id, address = await revoked_connection(stack, users_table, "youtube")
    await eventually(lambda: smtp.refused >= 2, 60, "the SMTP server refused the email, more than once")
    assert not smtp.to(address)

    await eventually(lambda: smtp.to(address), SMTP_REFUSAL_SECONDS + 30, "the email arrived once accepted")
    assert time.monotonic() >= smtp.refuse_until
    await eventually(lambda: settled(notifier), 30, "the notifier settled")
    await asyncio.sleep(2)
    assert len(smtp.to(address)) == 1

    async with TopicReader(stack.bootstrap, [notifier_env["NOTIFY_DLQ_TOPIC"]]) as dead_letters:
        await dead_letters.drain(2)
    assert not [value for _, _, value in dead_letters.records if value and str(user_id).encode() in value]


def test_the_notifier_log_holds_no_token(stack: Stack, notifier: WorkerProcess) -> None:
    log = Path(notifier.log_path).read_bytes()
    assert not find(needles(stack.sandbox), {"notify.log": [log]})
