"""The provider boundary: whatever one call to a token endpoint meets (a transport error, HTTP
that does not parse, a body that is not a token answer, an answer that trickles in) ends as
fresh tokens or a ``ProviderError``, within HTTP_TIMEOUT_SECONDS, and its message quotes
nothing the provider sent."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp.client_reqrep import RequestInfo
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from stream_app.catalog import platform
from stream_app.errors import (
    ProviderError,
    ProviderNetworkError,
    ProviderUnexpectedAnswer,
    ReauthRequiredError,
)
from stream_app.providers import ProviderClient, build_http_transport
from stream_app.providers.client import MAX_BODY_BYTES
from stream_app.settings import Settings, collect_platform_variables, load_settings

SPEC = platform("discord")  # RFC 6749 answers, client credentials in the form
REFRESH_TOKEN = "sbx_rt_presented-refresh-token-0123456789"
CLIENT_SECRET = "discord-client-secret-abcdef"
# Every answer below carries this, so a message that quotes the answer is caught.
ECHO = "sbx_at_echoed-by-the-provider-9876543210"

Handler = Callable[[httpx.Request], httpx.Response]


def make_settings(encryption_key: str, url: str, **overrides: Any) -> Settings:
    """Discord's settings; its single-use tokens' late answers are not waited for unless asked."""
    env = {"DISCORD_CLIENT_ID": "discord-client", "DISCORD_CLIENT_SECRET": CLIENT_SECRET, "DISCORD_TOKEN_URL": url}
    overrides = {"late_answer_seconds": 0, **overrides}
    return load_settings(encryption_key=encryption_key, **collect_platform_variables(env), **overrides)


def assert_quotes_nothing(exc: ProviderError) -> None:
    """Translated at the boundary (``from None``), naming no secret and nothing it was sent."""
    for text in (str(exc), exc.description, repr(exc)):
        for secret in (REFRESH_TOKEN, CLIENT_SECRET, ECHO):
            assert secret not in text
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)


async def refresh_through(handler: Handler, encryption_key: str) -> Any:
    """One refresh through httpx with a fake transport; the tokens, or the exception raised."""
    settings = make_settings(encryption_key, "https://provider.test/token")
    async with httpx.MockTransport(handler) as transport:
        try:
            return await ProviderClient(transport, settings).refresh(SPEC, REFRESH_TOKEN)
        except Exception as exc:  # the test judges what came out, whatever it was
            return exc


def answering(status: int, content: bytes, headers: dict[str, str] | None = None) -> Handler:
    return lambda request: httpx.Response(status, content=content, headers=headers)


def raising(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


def client_response_error() -> aiohttp.ClientResponseError:
    """What aiohttp raises for a bad status line or header; httpx_aiohttp does not map it."""
    info = RequestInfo(URL("https://provider.test/token"), "POST", CIMultiDictProxy(CIMultiDict()))
    return aiohttp.ClientResponseError(info, (), status=400, message=f"Bad status line {ECHO!r}")


def token_answer(**fields: Any) -> bytes:
    return json.dumps({"access_token": "sbx_at_fresh", "token_type": "Bearer", **fields}).encode()


NETWORK = [
    pytest.param(raising(httpx.ConnectError(f"refused {ECHO}")), id="connect-error"),
    pytest.param(raising(httpx.ReadTimeout(f"read {ECHO}")), id="read-timeout"),
    pytest.param(raising(httpx.RemoteProtocolError(f"peer closed {ECHO}")), id="remote-protocol-error"),
    pytest.param(raising(aiohttp.ServerDisconnectedError(f"gone {ECHO}")), id="aiohttp-disconnected"),
    pytest.param(raising(aiohttp.ClientPayloadError(f"cut short {ECHO}")), id="aiohttp-payload"),
    pytest.param(raising(ConnectionResetError(f"reset {ECHO}")), id="os-error"),
]


@pytest.mark.parametrize("handler", NETWORK)
async def test_a_broken_connection_is_a_network_error(handler: Handler, encryption_key: str) -> None:
    outcome = await refresh_through(handler, encryption_key)

    assert isinstance(outcome, ProviderNetworkError), outcome
    assert outcome.error_class == "network"
    assert_quotes_nothing(outcome)


UNEXPECTED = [
    pytest.param(raising(client_response_error()), "ClientResponseError", id="aiohttp-malformed-http"),
    pytest.param(
        answering(200, b"\x00not gzip " + ECHO.encode(), {"Content-Encoding": "gzip"}),
        "DecodingError",
        id="body-that-does-not-decode",
    ),
    pytest.param(raising(httpx.TooManyRedirects(f"loop {ECHO}")), "TooManyRedirects", id="too-many-redirects"),
    pytest.param(raising(RuntimeError(f"something else {ECHO}")), "RuntimeError", id="undocumented-exception"),
    pytest.param(
        answering(200, f"<html>{ECHO}</html>".encode(), {"Content-Type": "text/html"}),
        "malformed_response",
        id="200-html",
    ),
    pytest.param(answering(200, b""), "malformed_response", id="200-empty"),
    pytest.param(answering(200, f'{{"access_token": "{ECHO}"'.encode()), "malformed_response", id="200-cut-json"),
    pytest.param(answering(200, b"[" * 60_000), "malformed_response", id="200-nested-too-deep"),
    pytest.param(answering(200, json.dumps({"access_token": ""}).encode()), "malformed_response", id="token-empty"),
    pytest.param(answering(200, json.dumps({"access_token": 42}).encode()), "malformed_response", id="token-number"),
    pytest.param(answering(200, json.dumps({"access_token": ["a"]}).encode()), "malformed_response", id="token-list"),
    pytest.param(
        answering(200, token_answer(padding=ECHO * (MAX_BODY_BYTES // len(ECHO) + 1))),
        f"over {MAX_BODY_BYTES} bytes",
        id="200-over-the-cap",
    ),
    pytest.param(
        answering(401, f"<html>{ECHO}</html>".encode(), {"Content-Type": "text/html"}),
        "no OAuth error code (text/html)",
        id="gateway-401",
    ),
]


@pytest.mark.parametrize(("handler", "said"), UNEXPECTED)
async def test_an_unreadable_answer_is_an_unexpected_response(handler: Handler, said: str, encryption_key: str) -> None:
    outcome = await refresh_through(handler, encryption_key)

    assert isinstance(outcome, ProviderUnexpectedAnswer), outcome
    assert outcome.error_class == "unexpected_response"
    assert said in outcome.description
    assert_quotes_nothing(outcome)


@pytest.mark.parametrize(
    ("expires_in", "expected"),
    [
        pytest.param(3600, 3600, id="seconds"),
        pytest.param("3599", 3599, id="string"),
        pytest.param(3599.7, 3599, id="float"),
        pytest.param(1e999, SPEC.default_expires_in, id="infinite"),  # json.dumps writes Infinity
        pytest.param(1e300, SPEC.default_expires_in, id="absurd"),
        pytest.param(10**400, SPEC.default_expires_in, id="beyond-float"),
        pytest.param("soon", SPEC.default_expires_in, id="words"),
        pytest.param(True, SPEC.default_expires_in, id="bool"),
        pytest.param(0, SPEC.default_expires_in, id="zero"),
        pytest.param(None, SPEC.default_expires_in, id="null"),
    ],
)
async def test_an_odd_expires_in_reads_as_unsaid(expires_in: Any, expected: int | None, encryption_key: str) -> None:
    outcome = await refresh_through(answering(200, token_answer(expires_in=expires_in)), encryption_key)

    assert not isinstance(outcome, BaseException), repr(outcome)
    assert outcome.access_token == "sbx_at_fresh"
    assert outcome.expires_in == expected


async def test_an_oversized_refusal_is_judged_by_its_status(encryption_key: str) -> None:
    """The body past the cap is not read: a 400 too large to read names no code."""
    big = json.dumps({"error": "invalid_grant", "error_description": "x" * MAX_BODY_BYTES}).encode()
    outcome = await refresh_through(answering(400, big), encryption_key)

    assert isinstance(outcome, ProviderUnexpectedAnswer), outcome


async def test_a_verdict_still_gets_through(encryption_key: str) -> None:
    body = json.dumps({"error": "invalid_grant", "error_description": f"Invalid refresh token {REFRESH_TOKEN}"})
    outcome = await refresh_through(answering(400, body.encode()), encryption_key)

    assert isinstance(outcome, ReauthRequiredError) and outcome.reason == "invalid_grant"
    assert REFRESH_TOKEN not in outcome.description


# -- a real socket: malformed HTTP and answers that trickle, through the service's client ------

Script = Callable[[asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def local_server(script: Script, heads: list[bytes] | None = None) -> AsyncIterator[str]:
    """A one-route HTTP/1.1 server on a free port that reads a request (its head kept in
    ``heads``) and runs ``script``; its handlers are cancelled on the way out."""
    handlers: set[asyncio.Task[Any]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if heads is not None:
                heads.append(head)
            lengths = [
                line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
            ]
            await reader.readexactly(int(lengths[0]) if lengths else 0)
            await script(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client gave up first
        finally:
            writer.close()
            handlers.discard(task)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/token"
    finally:
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def refresh_against(
    script: Script, encryption_key: str, *, timeout: float = 5.0, **overrides: Any
) -> tuple[Any, float]:
    """One refresh through ``build_http_transport`` (httpx over aiohttp) against a local server
    that answers with ``script``: (tokens or the exception raised, seconds it took)."""
    async with local_server(script) as url:
        settings = make_settings(encryption_key, url, http_timeout_seconds=timeout, **overrides)
        async with build_http_transport() as http:
            started = time.monotonic()
            try:
                # A generous outer bound, so a call with no deadline fails the test instead of hanging it.
                outcome: Any = await asyncio.wait_for(ProviderClient(http, settings).refresh(SPEC, REFRESH_TOKEN), 20)
            except Exception as exc:  # the test judges what came out, whatever it was
                outcome = exc
            return outcome, time.monotonic() - started


def sends(*parts: bytes, pause: float = 0.0) -> Script:
    async def script(writer: asyncio.StreamWriter) -> None:
        for part in parts:
            writer.write(part)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)

    return script


def head(status: str, *headers: str) -> bytes:
    return ("\r\n".join((f"HTTP/1.1 {status}", *headers)) + "\r\n\r\n").encode()


BODY = token_answer(expires_in=3600)

MALFORMED_HTTP = [
    pytest.param(sends(f"HTTP/1.1 OK {ECHO}\r\n\r\n".encode()), ProviderUnexpectedAnswer, id="bad-status-line"),
    pytest.param(
        sends(head("200 OK", "Content-Length: twelve", "Content-Type: application/json"), BODY),
        ProviderUnexpectedAnswer,
        id="bad-content-length",
    ),
    pytest.param(
        sends(head("200 OK", f"Content-Length: {len(BODY) + 50}"), BODY), ProviderNetworkError, id="body-cut-short"
    ),
    pytest.param(
        sends(head("200 OK", "Transfer-Encoding: chunked"), b"10\r\n" + BODY[:16] + b"\r\n"),
        ProviderNetworkError,
        id="chunked-body-cut-short",
    ),
    pytest.param(
        sends(head("200 OK", "Transfer-Encoding: chunked"), b"zz\r\n" + BODY + b"\r\n0\r\n\r\n"),
        ProviderUnexpectedAnswer,
        id="bad-chunk-size",
    ),
    pytest.param(
        sends(head("200 OK", "Content-Encoding: gzip", f"Content-Length: {len(BODY)}"), BODY),
        ProviderUnexpectedAnswer,
        id="not-the-announced-encoding",
    ),
    pytest.param(sends(b""), ProviderNetworkError, id="closed-without-an-answer"),
]


@pytest.mark.parametrize(("script", "raised"), MALFORMED_HTTP)
async def test_malformed_http_is_a_provider_error(
    script: Script, raised: type[ProviderError], encryption_key: str
) -> None:
    outcome, _ = await refresh_against(script, encryption_key)

    assert isinstance(outcome, raised), repr(outcome)
    assert_quotes_nothing(outcome)


async def test_a_well_formed_answer_over_a_real_socket_is_read(encryption_key: str) -> None:
    """The harness itself works: the same server with a good answer gives tokens."""
    gzipped = gzip.compress(BODY)
    script = sends(head("200 OK", "Content-Encoding: gzip", f"Content-Length: {len(gzipped)}"), gzipped)

    outcome, _ = await refresh_against(script, encryption_key)

    assert not isinstance(outcome, BaseException), repr(outcome)
    assert (outcome.access_token, outcome.expires_in) == ("sbx_at_fresh", 3600)


async def test_the_environments_proxy_carries_the_request(encryption_key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY is honoured, through the service's own pool (not httpx's, as it once was)."""
    heads: list[bytes] = []
    async with local_server(sends(head("200 OK", f"Content-Length: {len(BODY)}"), BODY), heads) as proxy:
        for name in ("NO_PROXY", "no_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.removesuffix("/token"))
        # A plain-http URL off this machine: only with the test deployment switch.
        settings = make_settings(encryption_key, "http://provider.test/token", allow_insecure_token_urls=True)
        async with build_http_transport() as http:
            tokens = await ProviderClient(http, settings).refresh(SPEC, REFRESH_TOKEN)

    assert tokens.access_token == "sbx_at_fresh"
    assert heads[0].startswith(b"POST http://provider.test/token HTTP/1.1\r\n")


async def test_no_proxy_exempts_its_hosts(encryption_key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    heads: list[bytes] = []
    async with local_server(sends(head("200 OK", f"Content-Length: {len(BODY)}"), BODY), heads) as url:
        for name in ("no_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens: used, it fails
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        settings = make_settings(encryption_key, url)
        async with build_http_transport() as http:
            tokens = await ProviderClient(http, settings).refresh(SPEC, REFRESH_TOKEN)

    assert tokens.access_token == "sbx_at_fresh"
    assert heads[0].startswith(b"POST /token HTTP/1.1\r\n")


def trickle(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


TRICKLING = [
    pytest.param(sends(head("200 OK", f"Content-Length: {len(BODY)}"), *trickle(BODY), pause=0.5), id="body"),
    pytest.param(sends(*trickle(head("200 OK", f"Content-Length: {len(BODY)}") + BODY), pause=0.5), id="head"),
]


@pytest.mark.parametrize("script", TRICKLING)
async def test_an_answer_that_trickles_ends_at_the_timeout(script: Script, encryption_key: str) -> None:
    """A byte every 0.5 s never trips a per-read timeout of 1 s; the whole call still ends at 1 s."""
    outcome, elapsed = await refresh_against(script, encryption_key, timeout=1.0)

    assert isinstance(outcome, ProviderNetworkError), repr(outcome)
    assert outcome.description.startswith("timeout")
    assert 0.9 <= elapsed <= 1.5
    assert_quotes_nothing(outcome)


@pytest.mark.parametrize(("late_answer", "answered"), [(2.0, True), (0.0, False)])
async def test_a_single_use_providers_late_answer_is_waited_for(
    late_answer: float, answered: bool, encryption_key: str
) -> None:
    """Discord's tokens are single use: an answer after HTTP_TIMEOUT_SECONDS still counts,
    for up to LATE_ANSWER_SECONDS more."""

    async def late(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(1.5)
        writer.write(head("200 OK", f"Content-Length: {len(BODY)}") + BODY)
        await writer.drain()

    outcome, elapsed = await refresh_against(late, encryption_key, timeout=1.0, late_answer_seconds=late_answer)

    if answered:
        assert not isinstance(outcome, BaseException), repr(outcome)
        assert outcome.access_token == "sbx_at_fresh" and 1.4 <= elapsed <= 2.5
    else:
        assert isinstance(outcome, ProviderNetworkError) and 0.9 <= elapsed <= 1.4


async def test_a_server_that_never_answers_ends_at_the_timeout(encryption_key: str) -> None:
    async def silent(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    outcome, elapsed = await refresh_against(silent, encryption_key, timeout=1.0)

    assert isinstance(outcome, ProviderNetworkError), repr(outcome)
    assert 0.9 <= elapsed <= 1.5
