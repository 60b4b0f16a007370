"""Hostile review of issue 11 (the notifier) on the real broker and Postgres: poison records that
stalled the intake, a receiver's Retry-After the dispatcher could not hold, a far-future event that
muted a connection, a flood past a statement's size, secrets in logs, a database slow or away, an
SMTP server dropping the connection, lookups that hang. The core's defects were fixed by its
engineer (773cb3b, e1b5359, 91133ce), the channels' with these tests.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from schemas import TokenRefreshFailed
from stream_app.kafka_client import cap_client_logging
from stream_app.notify.channel import DeliveryFailed, Route
from stream_app.notify.channels import load_channels
from stream_app.notify.email import build_channel as build_email_channel
from stream_app.notify.email.lookup import HttpLookup, SqlLookup
from stream_app.notify.email.settings import EmailSettings
from stream_app.notify.intake import delivery_row
from stream_app.notify.notice import Notice
from stream_app.notify.store import Store
from tests.integration.test_notify_core import (
    SECRET,
    RecordingChannel,
    Setup,
    _committed_total,
    eventually,
    eventually_async,
    metric,
    notify_database_url,
    running,
    setup,
)
from tests.support.infra import free_port
from tests.support.kafka import TopicReader
from tests.support.notify_events import needs_reauth, refreshed
from tests.support.notify_receivers import HttpReceiver, SmtpSink

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]
__all__ = ["notify_database_url", "setup"]  # the fixtures, used by name

# Past the JSON decoder's recursion limit: json.loads raises RecursionError, not JSONDecodeError.
DEEP = b"[" * 100_000
FLOOD = 10_000  # one platform's re-auths within a digest window (5,000 passes)


async def test_a_deeply_nested_record_is_dead_lettered_and_the_next_one_delivered(setup: Setup) -> None:
    channel = RecordingChannel()
    good = needs_reauth()
    async with TopicReader(setup.bootstrap, [setup.dlq]) as reader:
        async with running(setup.settings(), [channel]):
            await setup.publish_raw("token.needs_reauth", f"{good.user_id}:spotify".encode(), DEEP)
            await setup.publish(good)
            await eventually(lambda: len(channel.sent) == 1, timeout=8, what="the record behind the poison delivered")
            letter = await reader.wait_for(lambda _t, r: r.get("what") == "record", timeout=5)
    assert letter["value_size"] == len(DEEP)
    assert letter["reason"].startswith("not JSON")


async def test_an_oversized_echo_does_not_stall_the_intake(setup: Setup) -> None:
    channel = RecordingChannel()
    good = needs_reauth()
    poison = {
        "event_id": str(uuid.uuid4()),
        "event_type": SECRET + "\\" * 300_000,  # 600 kB of JSON; its repr in a reason: 1.2 MB of JSON
        "occurred_at": datetime.now(UTC).isoformat(),
        "user_id": str(good.user_id),
        "platform": "spotify",
    }
    async with TopicReader(setup.bootstrap, [setup.dlq]) as reader:
        async with running(setup.settings(), [channel]):
            await setup.publish_raw("connection.created", None, json.dumps(poison).encode())
            await setup.publish(good)
            letter = await reader.wait_for(lambda _t, r: r.get("what") == "record", timeout=8)
            await eventually(lambda: len(channel.sent) == 1, timeout=5, what="the record beside the poison delivered")
    assert SECRET not in letter["reason"]
    assert len(letter["reason"]) < 1000


async def _row(setup: Setup, notice_id: uuid.UUID) -> Any:
    try:
        rows = await setup.rows(notice_id=notice_id)
    except ProgrammingError:  # the notifier has not made its tables yet
        return None
    return rows[0] if rows else None


async def test_an_absurd_retry_after_is_recorded_as_a_failed_attempt(setup: Setup) -> None:
    async def throttled(notice: Notice, call: int) -> None:
        if call == 1:
            raise DeliveryFailed("receiver answered HTTP 429", retry_after=float("99999999999999999999"))

    channel = RecordingChannel(behaviour=throttled)
    event = needs_reauth()
    async with running(setup.settings(), [channel]):
        await setup.publish(event)
        await eventually(lambda: len(channel.calls) == 1, what="the first attempt")

        async def rescheduled() -> bool:
            row = await _row(setup, event.event_id)
            return row is not None and row.attempts == 1 and row.status in ("pending", "dead")

        await eventually_async(rescheduled, timeout=5, what="the failed attempt recorded")


async def test_a_retry_after_past_the_give_up_age_does_not_outlive_it(setup: Setup) -> None:
    async def throttled(notice: Notice, call: int) -> None:
        raise DeliveryFailed("receiver answered HTTP 429", retry_after=3 * 86_400)

    channel = RecordingChannel(behaviour=throttled)
    event = needs_reauth()
    async with running(setup.settings(notify_give_up_hours=1), [channel]):
        await setup.publish(event)

        async def settled() -> bool:
            row = await _row(setup, event.event_id)
            return row is not None and row.attempts == 1

        await eventually_async(settled, timeout=8, what="the failed attempt recorded")
    row = await _row(setup, event.event_id)
    # Dead-lettered at once, or tried again no later than the give-up age.
    assert row.status == "dead" or row.next_attempt_at <= row.created_at + timedelta(hours=1, minutes=1)


async def test_a_far_future_refresh_does_not_mute_the_connection(setup: Setup) -> None:
    channel = RecordingChannel()
    user = uuid.uuid4()
    future = refreshed(user, at=datetime(2199, 1, 1, tzinfo=UTC))
    problem = needs_reauth(user)
    async with running(setup.settings(), [channel]):
        await setup.publish(future)
        await setup.publish(problem)

        async def recorded() -> bool:
            return await _row(setup, problem.event_id) is not None

        await eventually_async(recorded, timeout=10, what="the needs_reauth recorded")
        row = await _row(setup, problem.event_id)
        assert row.status != "dropped"
        await eventually(lambda: len(channel.sent) == 1, timeout=5, what="the needs_reauth told")


# -- secrets and personal data in logs, at DEBUG -------------------------------------------------

SLACK_PATH = "/services/T0HOSTILE/B0REVIEW/slackWebhookSecretPart"
WEBHOOK_QUERY_SECRET = "webhookQueryKeyDoNotLog"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"hostile-review-webhook-signing-key").decode()
BEARER = "lookupBearerTokenDoNotLog"
ADDRESS = "alice.private@example.com"


class RefusingSmtp(SmtpSink):
    """Refuses every recipient for good, quoting the address as real servers do."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"


def _dead_letter_of(channel: str) -> Callable[[str, dict[str, Any]], bool]:
    return lambda _topic, record: record.get("channel") == channel


@asynccontextmanager
async def _lookup_server() -> AsyncIterator[str]:
    async def user(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {BEARER}":
            return web.Response(status=401)
        return web.json_response({"email": ADDRESS, "name": "Alice Private"})

    app = web.Application()
    app.router.add_get("/users/{user_id}", user)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/users/{{user_id}}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("capped", [True, False], ids=["as-the-cli-logs", "http-and-smtp-clients-at-debug"])
async def test_no_secret_address_or_user_id_reaches_the_log_at_debug(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capped: bool
) -> None:
    """Every channel on, every failure path taken (Slack 500 then 200, webhook 410, SMTP 550), with
    LOG_LEVEL=DEBUG as `token-refresh notify` configures it (the client libraries capped), and with
    every library at DEBUG (the notifier embedded): httpx's INFO lines quoted the webhook's URL, its
    query's credential included, and the address lookup's URL, the user's id in it."""
    user = uuid.uuid4()
    with RefusingSmtp() as smtp, HttpReceiver() as http:
        slack_answers: Iterator[tuple[int, dict[str, str], bytes]] = iter([(500, {}, b"internal_error")])
        http.answer = lambda request: (
            next(slack_answers, (200, {}, b"ok")) if request.path.startswith("/services") else (410, {}, b"gone")
        )
        async with _lookup_server() as lookup_url:
            for name, value in {
                "NOTIFY_EMAIL_SMTP_HOST": "127.0.0.1",
                "NOTIFY_EMAIL_SMTP_PORT": str(smtp.port),
                "NOTIFY_EMAIL_SMTP_SECURITY": "none",
                "NOTIFY_EMAIL_FROM": "noreply@example.com",
                "NOTIFY_EMAIL_LOOKUP_URL": lookup_url,
                "NOTIFY_EMAIL_LOOKUP_BEARER_TOKEN": BEARER,
                "NOTIFY_SLACK_WEBHOOK_URL": http.url + SLACK_PATH,
                "NOTIFY_SLACK_ALLOW_HTTP": "true",
                "NOTIFY_SLACK_DIGEST_MINUTES": "1",
                "NOTIFY_WEBHOOK_URL": f"{http.url}/hook?key={WEBHOOK_QUERY_SECRET}",
                "NOTIFY_WEBHOOK_ALLOW_HTTP": "true",
                "NOTIFY_WEBHOOK_SECRETS": WEBHOOK_SECRET,
            }.items():
                monkeypatch.setenv(name, value)
            settings = setup.settings()
            channels = load_channels(database_url=settings.database_url.get_secret_value())
            assert sorted(channel.name for channel in channels) == ["email", "slack", "webhook"]
            if capped:
                cap_client_logging()
            else:  # the channels' clients at DEBUG (aiokafka's DEBUG quotes every record: kept at INFO)
                for name in ("httpx", "httpcore", "aiosmtplib"):
                    monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
                monkeypatch.setattr(logging.getLogger("aiokafka"), "level", logging.INFO)
            caplog.set_level(logging.DEBUG)
            failed = TokenRefreshFailed(
                user_id=user, platform="spotify", error_class="InvalidGrant", status="error", will_retry=False
            )
            async with TopicReader(setup.bootstrap, [setup.dlq]) as reader, running(settings, channels):
                await setup.publish(needs_reauth(user), failed)
                letters = [await reader.wait_for(_dead_letter_of(name), timeout=15) for name in ("email", "webhook")]
                await eventually(lambda: len(http.received(SLACK_PATH)) >= 3, what="Slack: a retry and the digest")
    # The notifier's lines (the test's own SMTP server logs as mail.log).
    text = "\n".join(record.getMessage() for record in caplog.records if not record.name.startswith("mail."))
    assert "dead-lettered" in text and "attempt 1 failed" in text  # the failure paths were logged
    password = make_url(setup.database_url).password
    for secret in (SLACK_PATH, "slackWebhookSecretPart", WEBHOOK_QUERY_SECRET, WEBHOOK_SECRET, BEARER, password):
        assert secret and secret not in text
    assert ADDRESS not in text and "alice.private" not in text
    assert str(user) not in text and user.hex not in text
    # The dead letters' reasons: the address masked, the endpoint by its label, no credential.
    assert letters[0]["reason"] == "the SMTP server refused the recipient a***@example.com (550 5.1.1)"
    assert letters[1]["reason"].startswith(f"webhook endpoint {http.url} answered HTTP 410")
    dead = json.dumps(letters)
    for secret in (SLACK_PATH, WEBHOOK_QUERY_SECRET, WEBHOOK_SECRET, BEARER, ADDRESS):
        assert secret not in dead


# -- a flood: one platform's digest of more connections than a statement can list ---------------


async def _pending_reauths(store: Store, count: int, now: datetime) -> int:
    """``count`` pending Slack digest deliveries of Spotify re-auths; how many were taken in."""
    rows = [
        delivery_row(
            Notice(uuid.uuid4(), "needs_reauth", "spotify", uuid.uuid4(), now, {"reason": "invalid_grant"}),
            channel="slack",
            route=Route.DIGEST,
            problem=True,
            status="pending",
            next_attempt_at=now,
            now=now,
        )
        for _ in range(count)
    ]
    async with store.begin() as connection:
        return len(await store.insert_deliveries(connection, rows))


async def _claim_spotify_digest(store: Store, now: datetime) -> list[Notice]:
    return list(
        await store.claim_digest(
            channel="slack",
            platform="spotify",
            owner="hostile",
            now=now + timedelta(seconds=1),
            lease_until=now + timedelta(minutes=2),
            window_seconds=3600,
        )
    )


async def test_a_digest_of_ten_thousand_connections_can_be_claimed(notify_database_url: str) -> None:
    store = Store(notify_database_url)
    try:
        await store.prepare()
        now = datetime.now(UTC)
        assert await _pending_reauths(store, FLOOD, now) == FLOOD
        claimed = await _claim_spotify_digest(store, now)
        assert claimed  # all of them, or a bounded first part (the rest in the next digest)
        await store.release(claimed, channel="slack", owner="hostile")
    finally:
        await store.dispose()


async def test_marking_a_large_digest_sent_costs_a_few_statements_not_a_few_per_notice(
    notify_database_url: str,
) -> None:
    store = Store(notify_database_url)
    try:
        await store.prepare()
        now = datetime.now(UTC)
        await _pending_reauths(store, 2_000, now)
        claimed = await _claim_spotify_digest(store, now)
        statements: list[str] = []

        def count(*args: Any) -> None:
            statements.append(args[2])

        event.listen(store.engine.sync_engine, "before_cursor_execute", count)
        assert await store.mark_sent(claimed, channel="slack", owner="hostile", now=now) == 2_000
        event.remove(store.engine.sync_engine, "before_cursor_execute", count)
        assert len(statements) <= 50, f"{len(statements)} statements to mark 2,000 notices sent"
    finally:
        await store.dispose()


# -- the database slow, then away, for a while (through a proxy of the test's own) ---------------


class DatabaseProxy:
    """A TCP proxy to Postgres that can hold every byte (a database that hangs) or cut every
    connection and refuse new ones (a database that is away)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.away = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> DatabaseProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()

    def cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.away:
            writer.transport.abort()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(
            self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()


async def test_a_database_slow_then_away_for_a_while_loses_and_repeats_nothing(setup: Setup) -> None:
    url = make_url(setup.database_url)
    async with DatabaseProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = setup.settings(database_url=url.set(port=proxy.port).render_as_string(hide_password=False))
        channel = RecordingChannel()
        first, second, third = needs_reauth(), needs_reauth(), needs_reauth()
        async with running(proxied, [channel]) as notifier:
            await setup.publish(first)
            await eventually(lambda: len(channel.sent) == 1, what="the first notice")

            proxy.flowing.clear()  # slow: every statement hangs
            await setup.publish(second)
            await asyncio.sleep(2)  # a database slow for a while
            assert len(channel.sent) == 1
            assert await _committed_total(setup, proxied.consumer_group, 1)
            proxy.flowing.set()
            await eventually(lambda: len(channel.sent) == 2, what="the second notice once the database answers")

            proxy.away = True  # away: connections cut, new ones refused
            proxy.cut()
            await setup.publish(third)
            await asyncio.sleep(2)
            assert len(channel.sent) == 2
            proxy.away = False
            await eventually(lambda: len(channel.sent) == 3, timeout=20, what="the third once the database is back")
            await eventually_async(lambda: _committed_total(setup, proxied.consumer_group, 3), what="offsets")
            assert await notifier.ready() is None
    assert sorted(n.notice_id for n in channel.sent) == sorted(e.event_id for e in (first, second, third))


# -- an SMTP server that drops the connection at the end of DATA ---------------------------------


class DroppingSmtp(SmtpSink):
    """Takes the first message, then drops the connection instead of answering 250: the message
    arrived, the notifier cannot know it."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        answer = await super().handle_DATA(server, session, envelope)
        if len(self.messages) == 1:
            server.transport.abort()
        return answer


async def test_a_connection_dropped_after_data_gives_at_most_one_copy_more_with_the_same_id(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At least once: the email is sent again (the retry cannot know the first arrived), with the
    same Message-ID so mail systems can tell; once, not again and again."""
    with DroppingSmtp() as smtp:
        async with _lookup_server() as lookup_url:
            for name, value in {
                "NOTIFY_EMAIL_SMTP_HOST": "127.0.0.1",
                "NOTIFY_EMAIL_SMTP_PORT": str(smtp.port),
                "NOTIFY_EMAIL_SMTP_SECURITY": "none",
                "NOTIFY_EMAIL_FROM": "noreply@example.com",
                "NOTIFY_EMAIL_LOOKUP_URL": lookup_url,
                "NOTIFY_EMAIL_LOOKUP_BEARER_TOKEN": BEARER,
            }.items():
                monkeypatch.setenv(name, value)
            settings = setup.settings()
            channels = load_channels(database_url=settings.database_url.get_secret_value())
            event = needs_reauth()
            async with running(settings, channels) as notifier:
                await setup.publish(event)
                await eventually(lambda: metric(notifier, "sent", "email") == 1, what="the email sent")
                assert metric(notifier, "failed", "email") == 1
    assert len(smtp.messages) == 2
    assert smtp.messages[0]["Message-ID"] == smtp.messages[1]["Message-ID"]
    assert str(event.event_id) in smtp.messages[0]["Message-ID"]
    (row,) = await setup.rows(notice_id=event.event_id)
    assert row.status == "sent" and row.attempts == 1


# -- an address lookup answering megabytes, or a drip of bytes ----------------------------------


@asynccontextmanager
async def _hostile_directory() -> AsyncIterator[str]:
    async def huge(request: web.Request) -> web.Response:
        padding = "x" * (8 * 1024 * 1024)
        return web.json_response({"email": ADDRESS, "padding": padding})

    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for _ in range(100):  # a byte every 0.1 s: each read well inside the timeout
            await response.write(b" ")
            await asyncio.sleep(0.1)
        await response.write(json.dumps({"email": ADDRESS}).encode())
        return response

    app = web.Application()
    app.router.add_get("/huge/{user_id}", huge)
    app.router.add_get("/drip/{user_id}", drip)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_an_address_lookup_answering_megabytes_or_a_drip_fails_in_bounded_time_and_memory() -> None:
    """Read whole before (httpx's timeout is per read): 8 MB taken in, a 10 s drip waited out."""
    async with _hostile_directory() as base:
        huge = HttpLookup(f"{base}/huge/{{user_id}}", bearer_token=None, timeout_seconds=0.5)
        drip = HttpLookup(f"{base}/drip/{{user_id}}", bearer_token=None, timeout_seconds=0.5)
        try:
            with pytest.raises(DeliveryFailed) as too_big:
                await huge.find(uuid.uuid4())
            with pytest.raises(DeliveryFailed) as dripping:
                await asyncio.wait_for(drip.find(uuid.uuid4()), 5)
        finally:
            await huge.aclose()
            await drip.aclose()
    assert too_big.value.reason == "address lookup answered more than 64 KiB" and not too_big.value.permanent
    assert dripping.value.reason == "address lookup did not answer within 1 s" and not dripping.value.permanent


async def test_an_sql_address_lookup_on_a_hung_database_fails_within_its_timeout(notify_database_url: str) -> None:
    """asyncio.timeout cancelled the query, then waited for asyncpg to let go of it: 60 s, whatever
    NOTIFY_EMAIL_LOOKUP_TIMEOUT_SECONDS said (each email send held a sender that long)."""
    url = make_url(notify_database_url)
    async with DatabaseProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = url.set(port=proxy.port).render_as_string(hide_password=False)
        lookup = SqlLookup(
            "SELECT 'a@example.com' WHERE CAST(:user_id AS text) IS NOT NULL", proxied, timeout_seconds=0.5
        )
        find: asyncio.Future[Any] | None = None
        try:
            assert await lookup.find(uuid.uuid4()) is not None  # a pooled connection, then the hang
            proxy.flowing.clear()
            find = asyncio.ensure_future(lookup.find(uuid.uuid4()))
            done, _ = await asyncio.wait({find}, timeout=5)  # not wait_for: it would wait the 60 s out
            assert done, "the lookup did not give up within 5 s"
            with pytest.raises(DeliveryFailed) as failed:
                find.result()
            assert failed.value.reason == "address lookup query failed (TimeoutError)" and not failed.value.permanent
        finally:
            if find is not None:
                find.cancel()
            proxy.flowing.set()
            await lookup.aclose()


async def test_readyz_answers_503_within_seconds_while_the_database_hangs(setup: Setup) -> None:
    """It answered after about a minute (the cancelled ping waited for asyncpg to let go): fixed in e1b5359."""
    url = make_url(setup.database_url)
    async with DatabaseProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        port = free_port()
        settings = setup.settings(
            database_url=url.set(port=proxy.port).render_as_string(hide_password=False),
            notify_http_host="127.0.0.1",
            notify_http_port=port,
        )
        async with running(settings, [RecordingChannel()]) as notifier, aiohttp.ClientSession() as client:
            await eventually_async(lambda: _ready(notifier), what="ready")
            proxy.flowing.clear()
            try:
                async with client.get(
                    f"http://127.0.0.1:{port}/readyz", timeout=aiohttp.ClientTimeout(total=7)
                ) as answer:
                    assert answer.status == 503
                    assert (await answer.json())["status"] == "not ready"
            finally:
                proxy.flowing.set()


async def _ready(notifier: Any) -> bool:
    return notifier.intake is not None and notifier.intake.started and await notifier.ready() is None


# -- two notifiers in one group on one store, one of them stopped midway ----------------------------


async def test_two_notifiers_in_one_group_send_each_notice_once_when_one_stops_midway(setup: Setup) -> None:
    first, second = RecordingChannel(), RecordingChannel()
    settings = setup.settings()
    before = [needs_reauth() for _ in range(60)]
    after = [needs_reauth() for _ in range(60)]
    async with running(settings, [second]):
        async with running(settings, [first]):
            await setup.publish(*before)
            await eventually(lambda: len(first.sent) + len(second.sent) == 60, what="the first sixty")
        await setup.publish(*after)  # the first stopped: its partitions move to the second
        await eventually(lambda: len(first.sent) + len(second.sent) == 120, timeout=30, what="all of them")
        await eventually_async(lambda: _committed_total(setup, settings.consumer_group, 120), what="offsets")
    sent = [notice.notice_id for notice in first.sent + second.sent]
    assert sorted(sent) == sorted(event.event_id for event in before + after)  # each once, none twice


# -- an SMTP server that does not offer STARTTLS (a downgrade) -------------------------------------


async def test_an_smtp_server_without_starttls_gets_no_message_and_no_password() -> None:
    """Sound: STARTTLS is required, never opportunistic: the password and the address do not travel
    in clear to a relay (or a man in the middle) that leaves STARTTLS out."""
    with SmtpSink() as smtp:
        async with _lookup_server() as lookup_url:
            settings = EmailSettings.model_validate(
                {
                    "smtp_host": "127.0.0.1",
                    "smtp_port": smtp.port,
                    "smtp_security": "starttls",
                    "smtp_username": "notify",
                    "smtp_password": "smtpPasswordDoNotSend",
                    "NOTIFY_EMAIL_FROM": "noreply@example.com",
                    "lookup_url": lookup_url,
                    "lookup_bearer_token": BEARER,
                }
            )
            channel = build_email_channel(database_url="sqlite+aiosqlite:///unused.db", settings=settings)
            assert channel is not None
            try:
                with pytest.raises(DeliveryFailed) as refused:
                    await channel.send(
                        Notice(uuid.uuid4(), "needs_reauth", "spotify", uuid.uuid4(), datetime.now(UTC), {})
                    )
            finally:
                await channel.aclose()
    assert "cannot be used as configured" in refused.value.reason and "STARTTLS" in refused.value.reason
    assert not refused.value.permanent and "smtpPasswordDoNotSend" not in refused.value.reason
    assert smtp.messages == [] and smtp.raw == []
