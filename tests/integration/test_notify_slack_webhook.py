"""The Slack channel against a Slack-like incoming webhook on this machine (aiohttp): the
receiver checks every payload's shape and Slack's limits the way Slack would, answers as Slack
does (200 "ok", 404 "no_service", ...), and records the bodies, which must hold no token, no raw
user id and not the webhook's URL."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from stream_app.notify.channel import DeliveryFailed
from stream_app.notify.notice import Notice, NoticeKind
from stream_app.notify.slack import SlackChannel, SlackSettings
from stream_app.privacy import UserIdHasher
from tests.support.infra import free_port

HASH_KEY = "slack-test-hash-key-0123456789"
WEBHOOK_PATH = "/services/T0TEST/B0TEST/hooksecret7f3a9c2e1d5b8a4f"
DASHBOARD = "https://ops.example.test/dashboard"
NOW = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)
# Token-shaped strings put into the events' test data: none may reach Slack.
ACCESS_TOKEN = "ya29.a0AfB_slackTestAccessToken9f8e7d6c"
REFRESH_TOKEN = "1//0gSlackTestRefreshTokenZz9Yy8Xx"
SEALED = "0123456789abcdef01234567:00112233445566778899aabbccddeeff:deadbeefcafe"
SECRETS = (ACCESS_TOKEN, REFRESH_TOKEN, SEALED, HASH_KEY)

KNOWN_BLOCKS = {"header", "section", "context", "actions", "divider"}
# Markup the channel itself writes: dates, and the configured mention. Anything else between
# < and > would be an injection (a mention, a link).
OWN_MARKUP = re.compile(r"<!date\^\d+\^[^|<>]*\|[^<>]*>|<!here>")
ENTITY = re.compile(r"&(?!amp;|lt;|gt;)")


def payload_problems(payload: Any) -> list[str]:
    """What Slack would refuse, or what would let an event's text become markup."""
    if not isinstance(payload, dict):
        return ["payload is not an object"]
    problems: list[str] = []
    texts: list[str] = []
    if not isinstance(payload.get("text"), str) or not payload["text"]:
        problems.append("no fallback text")
    else:
        texts.append(payload["text"])
    blocks = payload.get("blocks")
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= 50:
        return [*problems, "blocks: not a list of 1 to 50"]
    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or block.get("type") not in KNOWN_BLOCKS:
            problems.append(f"block {index}: unknown type")
            continue
        kind = block["type"]
        if kind == "header":
            text = block["text"]
            if text["type"] != "plain_text" or len(text["text"]) > 150:
                problems.append(f"block {index}: header")
            texts.append(text["text"])
        elif kind == "section":
            if len(block["text"]["text"]) > 3000:
                problems.append(f"block {index}: section text over 3000")
            fields = block.get("fields", [])
            if len(fields) > 10 or any(len(f["text"]) > 2000 for f in fields):
                problems.append(f"block {index}: fields")
            texts += [block["text"]["text"], *(f["text"] for f in fields)]
        elif kind == "context":
            elements = block["elements"]
            if not 1 <= len(elements) <= 10:
                problems.append(f"block {index}: context elements")
            texts += [e["text"] for e in elements]
        elif kind == "actions":
            for element in block["elements"]:
                if element["type"] != "button" or len(element["url"]) > 3000 or len(element["text"]["text"]) > 75:
                    problems.append(f"block {index}: button")
    for text in texts:
        bare = OWN_MARKUP.sub("", text)
        if "<" in bare or ">" in bare or ENTITY.search(bare):
            problems.append(f"unescaped text: {text[:80]!r}")
    return problems


@dataclass
class SlackLikeWebhook:
    """Answers ``answers`` in turn (status, body, headers), then 200 "ok"; another path: 404
    no_service, as Slack does for a removed webhook."""

    url: str = ""
    bodies: list[bytes] = field(default_factory=list)
    payloads: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    answers: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)
    hang: asyncio.Event | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append(body)
        if request.path != WEBHOOK_PATH:
            return web.Response(status=404, text="no_service")
        if self.hang is not None:
            await self.hang.wait()
        try:
            payload = json.loads(body)
        except ValueError:
            self.problems.append("not JSON")
            return web.Response(status=400, text="invalid_payload")
        problems = payload_problems(payload)
        if problems:
            self.problems += problems
            return web.Response(status=400, text="invalid_payload")
        self.payloads.append(payload)
        if self.answers:
            status, text, headers = self.answers.pop(0)
            return web.Response(status=status, text=text, headers=headers)
        return web.Response(text="ok")

    def everything(self) -> str:
        return b"\n".join(self.bodies).decode()


@pytest.fixture
async def slack() -> AsyncIterator[SlackLikeWebhook]:
    receiver = SlackLikeWebhook()
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)  # the receiver's own log line would name its path
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield receiver
    finally:
        if receiver.hang is not None:
            receiver.hang.set()
        await runner.cleanup()


@pytest.fixture
def user_ids() -> list[uuid.UUID]:
    return []


@pytest.fixture
def captured_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog


def settings(url: str, **overrides: Any) -> SlackSettings:
    values: dict[str, Any] = {
        "webhook_url": url,
        "mention": "<!here>",
        "dashboard_url": DASHBOARD,
        "user_hash_key": HASH_KEY,
        "timeout_seconds": 5,
        **overrides,
    }
    return SlackSettings(_env_file=None, **values)


@pytest.fixture
async def channel(slack: SlackLikeWebhook) -> AsyncIterator[SlackChannel]:
    made = SlackChannel(settings(slack.url + WEBHOOK_PATH), clock=lambda: NOW)
    yield made
    await made.aclose()


def notice(kind: NoticeKind, user_ids: list[uuid.UUID], *, at: datetime = NOW, **fields: Any) -> Notice:
    user_id = None if kind.startswith("circuit") else uuid.uuid4()
    if user_id is not None:
        user_ids.append(user_id)
    event_id = uuid.uuid4()
    event = {
        "event_id": str(event_id),
        "platform": "spotify",
        "user_id": None if user_id is None else str(user_id),
        "occurred_at": at.isoformat(),
        # What no channel may pass on, were an event ever to carry it.
        "access_token": ACCESS_TOKEN,
        "refresh_token": REFRESH_TOKEN,
        "sealed": SEALED,
        "error": f"provider said: Bearer {ACCESS_TOKEN} refresh_token={REFRESH_TOKEN}",
        **fields,
    }
    return Notice(event_id, kind, "spotify", user_id, at, event)


def assert_nothing_leaked(slack: SlackLikeWebhook, user_ids: list[uuid.UUID], logs: pytest.LogCaptureFixture) -> None:
    sent = slack.everything()
    assert slack.bodies, "nothing was sent"
    for secret in (*SECRETS, WEBHOOK_PATH, "hooksecret7f3a9c2e1d5b8a4f"):
        assert secret not in sent
    for user_id in user_ids:
        assert str(user_id) not in sent and user_id.hex not in sent
    lines = "\n".join(record.getMessage() for record in logs.records)
    assert "hooksecret7f3a9c2e1d5b8a4f" not in lines
    assert slack.problems == []


def not_chained(failure: BaseException) -> bool:
    """A traceback of the failure shows no httpx error (they carry the request, URL included)."""
    return failure.__cause__ is None and (failure.__context__ is None or failure.__suppress_context__)


async def test_a_refresh_that_failed_for_good_is_posted_at_once(
    slack: SlackLikeWebhook, channel: SlackChannel, user_ids: list[uuid.UUID], captured_logs: pytest.LogCaptureFixture
) -> None:
    failed = notice("refresh_failed", user_ids, error_class="invalid_client", status="error", will_retry=False)

    await channel.send(failed)

    [payload] = slack.payloads
    reference = UserIdHasher(HASH_KEY)(failed.user_id)  # the service's own log hash
    assert payload["text"].startswith("<!here> Spotify: a refresh failed and will not be retried")
    assert "invalid_client" in payload["text"] and f"user {reference}" in payload["text"]
    header, body, when, button = payload["blocks"]
    assert header["text"]["text"] == "Spotify: refresh failed, no retry"
    assert body["text"]["text"].startswith("<!here> ")
    assert [f["text"] for f in body["fields"]] == [
        "*Platform*\nSpotify",
        "*Error class*\ninvalid_client",
        "*Status*\nerror",
        f"*Connection*\nuser {reference}",
    ]
    assert "2026-11-30 22:00:00 UTC" in when["elements"][0]["text"]
    assert button["elements"][0]["url"] == DASHBOARD
    assert_nothing_leaked(slack, user_ids, captured_logs)


async def test_circuit_messages_name_the_worker_and_the_times(
    slack: SlackLikeWebhook, channel: SlackChannel, user_ids: list[uuid.UUID], captured_logs: pytest.LogCaptureFixture
) -> None:
    await channel.send(notice("circuit_opened", user_ids, worker="worker-a:4242", cool_down_seconds=30.0))
    await channel.send(notice("circuit_closed", user_ids, worker="worker-a:4242", open_seconds=120.0))

    opened, closed = slack.payloads
    assert opened["text"] == "<!here> Spotify: circuit opened on worker worker-a:4242 (cool-down 30 s)"
    assert opened["blocks"][0]["text"]["text"] == "Spotify: circuit opened"
    assert closed["text"] == "Spotify: circuit closed on worker worker-a:4242 after 2 min"  # no mention: good news
    assert "after 2 min" in closed["blocks"][1]["text"]["text"]
    assert_nothing_leaked(slack, user_ids, captured_logs)


async def test_a_digest_counts_connections_per_reason_and_the_recovered(
    slack: SlackLikeWebhook, channel: SlackChannel, user_ids: list[uuid.UUID], captured_logs: pytest.LogCaptureFixture
) -> None:
    reasons = ["invalid_grant"] * 30 + ["consent_revoked"] * 5 + ["account_deleted"] * 2
    notices = [
        notice("needs_reauth", user_ids, at=NOW - timedelta(minutes=50 - i), reason=reason)
        for i, reason in enumerate(reasons)
    ]
    notices += [notice("recovered", user_ids, at=NOW - timedelta(minutes=5)) for _ in range(5)]

    await channel.send_digest("spotify", notices)

    [payload] = slack.payloads  # one message for the platform, not one per user
    assert payload["text"] == "37 Spotify connections need re-auth in the last hour; 5 Spotify connections recovered"
    texts = [b["text"]["text"] for b in payload["blocks"] if b["type"] in ("header", "section")]
    assert "*37 Spotify connections need re-auth in the last hour*" in texts
    assert "*By reason*\n• invalid_grant: 30\n• consent_revoked: 5\n• account_deleted: 2" in texts
    assert "*5 Spotify connections recovered*" in texts
    examples = next(b for b in payload["blocks"] if b["type"] == "context")["elements"][0]["text"]
    assert examples.endswith("and 32 more") and examples.count(",") == 4  # five references at most
    assert_nothing_leaked(slack, user_ids, captured_logs)


async def test_hostile_event_text_is_escaped_not_markup(
    slack: SlackLikeWebhook, channel: SlackChannel, user_ids: list[uuid.UUID], captured_logs: pytest.LogCaptureFixture
) -> None:
    hostile = "<!channel> <https://evil.example/x|click here> & <@U0ADMIN> *bold*"
    await channel.send(notice("refresh_failed", user_ids, error_class=hostile, status="<!everyone>", will_retry=False))
    await channel.send(notice("circuit_opened", user_ids, worker=hostile, cool_down_seconds=30))
    await channel.send_digest("spotify", [notice("needs_reauth", user_ids, reason=hostile)])

    assert len(slack.payloads) == 3  # the receiver refused none (no stray < > &)
    sent = slack.everything()
    for markup in ("<!channel>", "<!everyone>", "<@U0ADMIN>", "<https://evil"):
        assert markup not in sent
    assert "&lt;!channel&gt; &lt;https://evil.example/x|click here&gt; &amp; &lt;@U0ADMIN&gt;" in sent
    for payload in slack.payloads:  # and Slack is told not to auto-link names or URLs in them
        for block in payload["blocks"]:
            for text in [block.get("text"), *block.get("fields", []), *block.get("elements", [])]:
                if isinstance(text, dict) and text.get("type") == "mrkdwn":
                    assert text["verbatim"] is True
    assert_nothing_leaked(slack, user_ids, captured_logs)


async def test_slack_limits_hold_for_a_digest_of_many_long_reasons(
    slack: SlackLikeWebhook, channel: SlackChannel, user_ids: list[uuid.UUID], captured_logs: pytest.LogCaptureFixture
) -> None:
    notices = [notice("needs_reauth", user_ids, reason=f"reason_{i:03d}_" + "&x" * 600) for i in range(300)]

    await channel.send_digest("spotify", notices)

    [payload] = slack.payloads  # the receiver checked the limits
    breakdown = next(b for b in payload["blocks"] if b["type"] == "section" and "By reason" in b["text"]["text"])
    assert breakdown["text"]["text"].endswith("• 290 other reasons: 290")
    assert_nothing_leaked(slack, user_ids, captured_logs)


async def test_429_is_retried_no_sooner_than_retry_after(
    slack: SlackLikeWebhook, channel: SlackChannel, user_ids: list[uuid.UUID], captured_logs: pytest.LogCaptureFixture
) -> None:
    slack.answers.append((429, "rate_limited", {"Retry-After": "7"}))

    with pytest.raises(DeliveryFailed) as caught:
        await channel.send(notice("circuit_opened", user_ids, worker="w", cool_down_seconds=30))

    assert caught.value.retry_after == 7
    assert not caught.value.permanent
    assert caught.value.reason == "Slack answered HTTP 429: rate_limited"
    assert_nothing_leaked(slack, user_ids, captured_logs)


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, "invalid_payload"), (403, "action_prohibited"), (410, "channel_is_archived")],
)
async def test_slack_refusals_are_permanent_with_slacks_error(
    status: int,
    error: str,
    slack: SlackLikeWebhook,
    channel: SlackChannel,
    user_ids: list[uuid.UUID],
    captured_logs: pytest.LogCaptureFixture,
) -> None:
    slack.answers.append((status, error, {}))

    with pytest.raises(DeliveryFailed) as caught:
        await channel.send(notice("circuit_closed", user_ids, worker="w", open_seconds=5))

    assert caught.value.permanent
    assert caught.value.reason == f"Slack answered HTTP {status}: {error}"
    assert_nothing_leaked(slack, user_ids, captured_logs)


async def test_a_removed_webhook_404_no_service_is_permanent_and_its_url_is_not_told(
    slack: SlackLikeWebhook, user_ids: list[uuid.UUID], captured_logs: pytest.LogCaptureFixture
) -> None:
    gone = SlackChannel(settings(slack.url + "/services/T0TEST/B0TEST/hooksecret7f3a9c2e1d5b8a4f-revoked"))
    try:
        with pytest.raises(DeliveryFailed) as caught:
            await gone.send(notice("circuit_closed", user_ids, worker="w", open_seconds=5))
    finally:
        await gone.aclose()

    assert caught.value.permanent
    assert caught.value.reason == "Slack answered HTTP 404: no_service"
    assert not_chained(caught.value)
    assert_nothing_leaked(slack, user_ids, captured_logs)


async def test_a_redirect_is_not_followed_and_is_permanent(
    slack: SlackLikeWebhook, channel: SlackChannel, user_ids: list[uuid.UUID], captured_logs: pytest.LogCaptureFixture
) -> None:
    slack.answers.append((302, "", {"Location": f"{slack.url}/elsewhere"}))

    with pytest.raises(DeliveryFailed) as caught:
        await channel.send(notice("circuit_closed", user_ids, worker="w", open_seconds=5))

    assert caught.value.permanent
    assert caught.value.reason == "Slack answered HTTP 302 (redirects are not followed)"
    assert len(slack.bodies) == 1
    assert_nothing_leaked(slack, user_ids, captured_logs)


async def test_a_server_error_is_retryable_and_a_body_that_is_not_slacks_code_is_not_repeated(
    slack: SlackLikeWebhook, channel: SlackChannel, user_ids: list[uuid.UUID], captured_logs: pytest.LogCaptureFixture
) -> None:
    page = f"<html>upstream {WEBHOOK_PATH} failed</html>"
    slack.answers.append((500, page, {"Content-Type": "text/html"}))

    with pytest.raises(DeliveryFailed) as caught:
        await channel.send(notice("circuit_closed", user_ids, worker="w", open_seconds=5))

    assert not caught.value.permanent and caught.value.retry_after is None
    assert caught.value.reason == "Slack answered HTTP 500"
    assert_nothing_leaked(slack, user_ids, captured_logs)


async def test_a_timeout_and_an_unreachable_slack_are_retryable(
    slack: SlackLikeWebhook, user_ids: list[uuid.UUID]
) -> None:
    slack.hang = asyncio.Event()
    slow = SlackChannel(settings(slack.url + WEBHOOK_PATH, timeout_seconds=0.3))
    closed = SlackChannel(settings(f"http://127.0.0.1:{free_port()}{WEBHOOK_PATH}"))
    try:
        with pytest.raises(DeliveryFailed) as timed_out:
            await slow.send(notice("circuit_closed", user_ids, worker="w", open_seconds=5))
        with pytest.raises(DeliveryFailed) as unreachable:
            await closed.send(notice("circuit_closed", user_ids, worker="w", open_seconds=5))
    finally:
        await slow.aclose()
        await closed.aclose()

    assert not timed_out.value.permanent and timed_out.value.reason == "Slack did not answer within 0.3 s"
    assert not unreachable.value.permanent and unreachable.value.reason == "Slack unreachable (ConnectError)"
    for failure in (timed_out.value, unreachable.value):
        assert not_chained(failure)


async def test_the_url_is_kept_out_of_httpx_log_lines_as_httpx_writes_it(
    slack: SlackLikeWebhook, user_ids: list[uuid.UUID], captured_logs: pytest.LogCaptureFixture
) -> None:
    """httpx logs the URL it normalised (host in lower case), not the setting's text."""
    shouted = SlackChannel(settings(slack.url.replace("127.0.0.1", "LOCALHOST") + WEBHOOK_PATH))
    try:
        await shouted.send(notice("circuit_closed", user_ids, worker="w", open_seconds=5))
    finally:
        await shouted.aclose()

    assert any("HTTP Request: POST <slack webhook>" in r.getMessage() for r in captured_logs.records)
    assert_nothing_leaked(slack, user_ids, captured_logs)
