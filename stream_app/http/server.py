"""Serving the HTTP API on the running event loop (the worker's), beside its other work.

The API shares the loop with the refreshes, so what a client can make it hold is bounded: at
most MAX_REQUESTS_IN_FLIGHT requests at once beyond the health probes (the rest get 503; the
probes always answer, so idle or busy clients cannot get a healthy worker restarted), a
request's head within REQUEST_HEAD_SECONDS (a client that trickles its headers is
disconnected), a body of MAX_BODY_BYTES, and a stop that waits STOP_GRACE_SECONDS at most for
answers in flight (a client that stops reading does not hold the worker's shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from stream_app.errors import ConfigurationError

MAX_REQUESTS_IN_FLIGHT = 32
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
REQUEST_HEAD_SECONDS = 10.0
MAX_BODY_BYTES = 64 * 1024
STOP_GRACE_SECONDS = 3


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """The process's signals are its owner's (Faust's worker, or the CLI)."""
        yield


class _HeadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's head: it must be complete within
    REQUEST_HEAD_SECONDS of the connection (or of the previous answer). uvicorn's keep-alive
    timer restarts with every byte received, so a slow trickle of header bytes held a
    connection, and a file descriptor, for ever."""

    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:  # a request's head is in
            self._disarm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_deadline = self.loop.call_later(REQUEST_HEAD_SECONDS, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()


class _InFlightLimit:
    """503 for a request beyond MAX_REQUESTS_IN_FLIGHT, the health probes exempt (uvicorn's own
    limit counts idle connections: 64 of them, no token needed, failed the liveness probe)."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._in_flight = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in HEALTH_PATHS:
            await self._app(scope, receive, send)
            return
        if self._in_flight >= MAX_REQUESTS_IN_FLIGHT:
            await _refuse(send, 503, b'{"detail":"too many requests in flight"}')
            return
        self._in_flight += 1
        try:
            await self._app(scope, receive, send)
        finally:
            self._in_flight -= 1


class _BodyLimit:
    """413 for a request body over MAX_BODY_BYTES (declared, or counted as it arrives), before
    any route reads it: the admin routes' bodies are small, and a body is read before the
    bearer token is checked."""

    def __init__(self, app: Any) -> None:
        self._app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            await _too_large(send)
            return
        received, refused = 0, False

        async def counted() -> Any:
            nonlocal received, refused
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES and not refused:
                refused = True
                await _too_large(send)
            # The route sees a client gone; it cannot answer after the 413.
            return {"type": "http.disconnect"} if refused else message

        async def unless_refused(message: Any) -> None:
            if not refused:
                await send(message)

        await self._app(scope, counted, unless_refused)


async def _too_large(send: Any) -> None:
    await _refuse(send, 413, b'{"detail":"request body too large"}')


async def _refuse(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class HttpServer:
    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self._socket = _bound(host, port)
        config = uvicorn.Config(
            _InFlightLimit(_BodyLimit(app)),
            http=_HeadDeadlineProtocol,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=STOP_GRACE_SECONDS,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[self._socket]))

    async def serve(self) -> None:
        await self._server.serve(sockets=[self._socket])

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task


def _bound(host: str, port: int) -> socket.socket:
    """Bind at once, so a port in use stops the start-up with one line naming HTTP_PORT."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"HTTP_PORT: cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
