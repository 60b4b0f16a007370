"""The signed webhook over a real socket: a local aiohttp receiver gets the request, the
independent Standard Webhooks implementation and the snippets of docs/webhooks.md (Python, and
Node as documented) verify it, and each kind of answer becomes the right DeliveryFailed."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from schemas.events import TokenNeedsReauth, TokenRefreshFailed
from stream_app.crypto import TokenCipher, generate_key
from stream_app.notify.channel import DeliveryFailed
from stream_app.notify.notice import Notice, recovered_notice_id
from stream_app.notify.webhook import WebhookChannel, WebhookSettings
from tests.support.node_snippets import snippet

DOC = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
OLD = "whsec_" + base64.b64encode(os.urandom(32)).decode()
NEW = "whsec_" + base64.b64encode(os.urandom(32)).decode()
# Token-shaped strings of the test data: none may reach the endpoint (events carry none).
PLAIN_TOKENS = ("sbx_at_" + uuid.uuid4().hex, "sbx_rt_" + uuid.uuid4().hex)
QUERY_SECRET = "q" + uuid.uuid4().hex

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    received: list[Received] = field(default_factory=list)


@asynccontextmanager
async def receiver(answer: Handler | None = None) -> AsyncIterator[Receiver]:
    """A local HTTP endpoint recording every request, answering ``answer`` (default 204)."""
    box = Receiver(url="")

    async def handle(request: web.Request) -> web.StreamResponse:
        box.received.append(
            Received(
                request.method,
                request.path_qs,
                {k.lower(): v for k, v in request.headers.items()},
                await request.read(),
            )
        )
        return await answer(request) if answer else web.Response(status=204)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    box.url = f"http://127.0.0.1:{port}"
    try:
        yield box
    finally:
        await runner.cleanup()


def channel_for(url: str, **values: Any) -> WebhookChannel:
    settings = WebhookSettings(
        _env_file=None, url=url, allow_http=True, secrets=f"{OLD},{NEW}", **{"timeout_seconds": 5, **values}
    )
    return WebhookChannel(settings)


def failure_notice() -> Notice:
    event = TokenRefreshFailed(
        user_id=uuid.uuid4(),
        platform="spotify",
        error_class="invalid_client",
        error="invalid_client: the client secret was refused",
        status="error",
        will_retry=False,
    )
    data = json.loads(event.model_dump_json())
    return Notice(event.event_id, "refresh_failed", "spotify", event.user_id, event.occurred_at, data)


async def send(url: str, notice: Notice | None = None, **values: Any) -> DeliveryFailed | None:
    channel = channel_for(url, **values)
    try:
        await channel.send(notice or failure_notice())
    except DeliveryFailed as failed:
        return failed
    finally:
        await channel.aclose()
    return None


def answering(status: int, headers: dict[str, str] | None = None) -> Handler:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers=headers, text=f"echo {request.path_qs}")

    return answer


async def test_the_request_verifies_under_each_secret_of_a_rotation() -> None:
    event = TokenNeedsReauth(user_id=uuid.uuid4(), platform="spotify", reason="invalid_grant")
    notice = Notice(
        event.event_id, "needs_reauth", "spotify", event.user_id, event.occurred_at, json.loads(event.model_dump_json())
    )
    async with receiver() as endpoint:
        assert await send(f"{endpoint.url}/hooks/in?key={QUERY_SECRET}", notice) is None

    [request] = endpoint.received
    assert (request.method, request.path) == ("POST", f"/hooks/in?key={QUERY_SECRET}")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("token-refresh-notify/")
    assert request.headers["webhook-id"] == str(event.event_id)
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    for secret in (OLD, NEW):
        payload = Webhook(secret).verify(request.body, request.headers)
        assert payload == {
            "type": "token.needs_reauth",
            "timestamp": event.model_dump(mode="json")["occurred_at"],
            "data": json.loads(event.model_dump_json()),
        }
    tampered = request.body.replace(b'"spotify"', b'"twitch"')
    for secret in (OLD, NEW):
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(tampered, request.headers)


async def test_429_is_retried_no_sooner_than_its_retry_after() -> None:
    async with receiver(answering(429, {"Retry-After": "7"})) as endpoint:
        failed = await send(f"{endpoint.url}/hook")
    assert failed is not None and not failed.permanent and failed.retry_after == 7
    assert "HTTP 429" in failed.reason


async def test_503_with_an_http_date_retry_after() -> None:
    async with receiver(answering(503, {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"})) as endpoint:
        failed = await send(f"{endpoint.url}/hook")
    assert failed is not None and not failed.permanent and failed.retry_after is not None
    assert failed.retry_after > 3600


@pytest.mark.parametrize("status", [410, 400, 401, 404, 422])
async def test_other_4xx_are_permanent(status: int) -> None:
    async with receiver(answering(status)) as endpoint:
        failed = await send(f"{endpoint.url}/hook?key={QUERY_SECRET}")
    assert failed is not None and failed.permanent and f"HTTP {status}" in failed.reason
    assert QUERY_SECRET not in failed.reason and "/hook" not in failed.reason


@pytest.mark.parametrize("status", [500, 502, 408])
async def test_5xx_and_408_are_retried(status: int) -> None:
    async with receiver(answering(status)) as endpoint:
        failed = await send(f"{endpoint.url}/hook")
    assert failed is not None and not failed.permanent and failed.retry_after is None
    assert f"HTTP {status}" in failed.reason


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_refused_not_followed(status: int) -> None:
    async with receiver() as elsewhere:

        async def redirect(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, headers={"Location": f"{elsewhere.url}/stolen"})

        async with receiver(redirect) as endpoint:
            failed = await send(f"{endpoint.url}/hook?key={QUERY_SECRET}")
    assert failed is not None and failed.permanent
    assert f"redirect (HTTP {status})" in failed.reason and "NOTIFY_WEBHOOK_URL" in failed.reason
    assert len(endpoint.received) == 1 and elsewhere.received == []
    assert QUERY_SECRET not in failed.reason and "stolen" not in failed.reason


async def test_no_answer_within_the_timeout_is_retried() -> None:
    released = asyncio.Event()

    async def late(request: web.Request) -> web.StreamResponse:
        await released.wait()
        return web.Response(status=204)

    async with receiver(late) as endpoint:
        started = time.monotonic()
        failed = await send(f"{endpoint.url}/hook?key={QUERY_SECRET}", timeout_seconds=0.3)
        elapsed = time.monotonic() - started
        released.set()
    assert failed is not None and not failed.permanent and "within 0.3 s" in failed.reason
    assert elapsed < 3
    assert QUERY_SECRET not in failed.reason


async def test_an_answer_dripped_byte_by_byte_still_meets_the_deadline() -> None:
    """httpx's timeout bounds each read; the channel's deadline bounds the whole request."""

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n")
        try:
            while True:
                writer.write(b"x-drip: 1\r\n")
                await writer.drain()
                await asyncio.sleep(0.05)
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(drip, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        failed = await send(f"http://127.0.0.1:{port}/hook", timeout_seconds=0.5)
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert failed is not None and not failed.permanent and "within 0.5 s" in failed.reason
    assert elapsed < 3


async def test_an_unreachable_endpoint_is_retried() -> None:
    async with receiver() as endpoint:
        url = f"{endpoint.url}/hook?key={QUERY_SECRET}"
    failed = await send(url)  # the port is closed now
    assert failed is not None and not failed.permanent and "unreachable (ConnectError)" in failed.reason
    assert QUERY_SECRET not in failed.reason


def python_snippet() -> tuple[Callable[..., Any], type[Exception]]:
    """verify_webhook and InvalidWebhook, as documented."""
    namespace: dict[str, Any] = {}
    exec(compile(snippet("verify-webhook-python", DOC, "python"), "docs/webhooks.md", "exec"), namespace)  # noqa: S102
    return namespace["verify_webhook"], namespace["InvalidWebhook"]


def node_snippet(cases: list[dict[str, Any]]) -> list[Any]:
    """Run verifyWebhook (as documented) on each case: the parsed body, or {"error": message}."""
    node = shutil.which("node") or "/usr/bin/node"
    driver = """
const cases = JSON.parse(process.argv[1]);
console.log(JSON.stringify(cases.map((c) => {
  try {
    return verifyWebhook(c.secrets, c.headers, Buffer.from(c.body, 'base64'), c.now);
  } catch (error) {
    return { error: error.message };
  }
})));
"""
    script = snippet("verify-webhook-node", DOC) + driver
    completed = subprocess.run([node, "-e", script, json.dumps(cases)], capture_output=True, check=True, timeout=30)
    outcome: list[Any] = json.loads(completed.stdout)
    return outcome


async def test_the_documented_snippets_verify_a_real_request() -> None:
    async with receiver() as endpoint:
        assert await send(f"{endpoint.url}/hook") is None
    [request] = endpoint.received
    genuine = json.loads(request.body)
    tampered = request.body.replace(b'"will_retry":false', b'"will_retry":true')
    assert tampered != request.body
    signed_at = int(request.headers["webhook-timestamp"])
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    without_id = {k: v for k, v in request.headers.items() if k != "webhook-id"}
    # (accepted, the consumer's secrets, headers, body, the consumer's clock)
    cases = [
        (True, [OLD], request.headers, request.body, signed_at),
        (True, [NEW], request.headers, request.body, signed_at + 299),
        (True, [other, NEW], request.headers, request.body, signed_at - 299),
        (False, [OLD, NEW], request.headers, tampered, signed_at),
        (False, [OLD, NEW], request.headers, request.body, signed_at + 301),  # replayed late
        (False, [OLD, NEW], request.headers, request.body, signed_at - 301),
        (False, [other], request.headers, request.body, signed_at),
        (False, [OLD], without_id, request.body, signed_at),
    ]

    verify, invalid = python_snippet()
    for accepted, secrets, headers, body, now in cases:
        if accepted:
            assert verify(secrets, headers, body, now=now) == genuine
        else:
            with pytest.raises(invalid):
                verify(secrets, headers, body, now=now)

    outcomes = node_snippet(
        [{"secrets": s, "headers": h, "body": base64.b64encode(b).decode(), "now": n} for _, s, h, b, n in cases]
    )
    for (accepted, *_), outcome in zip(cases, outcomes, strict=True):
        assert (outcome == genuine) if accepted else ("error" in outcome), outcome


async def test_nothing_received_holds_a_token_or_a_secret() -> None:
    """The test data's tokens (sealed in the connection.created envelope of a recovered notice,
    which the core should never pass on, and in plain text) and the secrets reach no endpoint,
    whether it answers or fails."""
    cipher = TokenCipher(generate_key())
    sealed = [cipher.encrypt(token) for token in PLAIN_TOKENS]
    created: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_type": "connection.created",
        "schema_version": 1,
        "occurred_at": "2026-11-30T22:00:00Z",
        "user_id": str(uuid.uuid4()),
        "platform": "spotify",
        "access_token": sealed[0],
        "refresh_token": sealed[1],
    }
    recovered = Notice(
        recovered_notice_id(uuid.UUID(created["event_id"])),
        "recovered",
        "spotify",
        uuid.UUID(created["user_id"]),
        datetime(2026, 11, 30, 22, tzinfo=UTC),
        created,
    )
    notices = [failure_notice(), failure_notice(), recovered]
    async with receiver(answering(500)) as failing, receiver() as endpoint:
        for notice in notices:
            assert await send(f"{failing.url}/hook", notice) is not None
            assert await send(f"{endpoint.url}/hook", notice) is None
    assert len(endpoint.received) == len(failing.received) == 3
    assert json.loads(endpoint.received[2].body)["type"] == "connection.recovered"
    everything = "\n".join(
        f"{request.path}\n{json.dumps(request.headers)}\n{request.body.decode()}"
        for request in [*endpoint.received, *failing.received]
    )
    keys = [base64.b64decode(secret.removeprefix("whsec_")) for secret in (OLD, NEW)]
    secrets = [OLD, NEW, *(s.removeprefix("whsec_") for s in (OLD, NEW)), *(k.hex() for k in keys)]
    for needle in [*PLAIN_TOKENS, *sealed, *(part for token in sealed for part in token.split(":")), *secrets]:
        assert needle not in everything


async def test_a_tls_failure_is_retried_and_named() -> None:
    async with receiver() as endpoint:  # plain HTTP: the TLS handshake fails
        url = endpoint.url.replace("http://", "https://") + f"/hook?key={QUERY_SECRET}"
        failed = await send(url)
    assert failed is not None and not failed.permanent
    assert "unreachable (ConnectError, TLS WRONG_VERSION_NUMBER)" in failed.reason
    assert QUERY_SECRET not in failed.reason and endpoint.received == []
