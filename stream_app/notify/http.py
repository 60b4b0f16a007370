"""The notifier's probes and metrics: /healthz (the process answers), /readyz (its consumer runs
and its store answers), /metrics (Prometheus text)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from stream_app.notify.deadline import wait_at_most
from stream_app.notify.metrics import NotifyMetrics


def create_app(metrics: NotifyMetrics, ready: Callable[[], Awaitable[str | None]]) -> web.Application:
    """``ready`` answers None when ready, or why not."""

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    check = _OneCheckAtATime(ready)

    async def readyz(_request: web.Request) -> web.Response:
        problem = await check.answer()
        if problem is None:
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready", "reason": problem}, status=503)

    async def metrics_page(_request: web.Request) -> web.Response:
        response = web.Response(body=metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app


READY_TIMEOUT_SECONDS = 5.0


class _OneCheckAtATime:
    """Runs the readiness check, answering within the timeout even when the check hangs (it is
    not waited for past it: wait_at_most), and starts no second one while it lingers (each would
    hold a pooled connection)."""

    def __init__(self, ready: Callable[[], Awaitable[str | None]]) -> None:
        self._ready = ready
        self._running: asyncio.Future[str | None] | None = None

    async def answer(self) -> str | None:
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._ready())
        task = self._running
        try:
            return await wait_at_most(task, READY_TIMEOUT_SECONDS)
        except TimeoutError:
            return (
                f"the readiness check did not finish within {READY_TIMEOUT_SECONDS:g} s (the database does not answer)"
            )
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # this probe itself was cancelled
            return "the readiness check was cancelled"
        except Exception as error:
            return f"readiness check failed: {type(error).__name__}"


class HttpServer:
    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self._host, self.port = host, port

    async def start(self) -> None:
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self._host, self.port).start()
        except BaseException:
            await self._runner.cleanup()
            raise

    async def stop(self) -> None:
        await self._runner.cleanup()
