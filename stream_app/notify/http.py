"""The notifier's probes and metrics: /healthz (the process answers), /readyz (its consumer runs
and its store answers), /metrics (Prometheus text)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

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
    """Runs the readiness check, answering within the timeout even when the check hangs: a
    cancelled query to a database that stopped answering is only let go by its driver a minute
    later, so the check is not awaited past the timeout, and no second one starts while it lingers
    (each would hold a pooled connection)."""

    def __init__(self, ready: Callable[[], Awaitable[str | None]]) -> None:
        self._ready = ready
        self._running: asyncio.Task[str | None] | None = None

    async def answer(self) -> str | None:
        timeout = READY_TIMEOUT_SECONDS
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._ready())
            self._running.add_done_callback(_retrieve)
        task = self._running
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
            return f"the readiness check did not finish within {timeout:g} s (the database does not answer)"
        if task.cancelled():
            return "the readiness check was cancelled"
        error = task.exception()
        if error is not None:
            return f"readiness check failed: {type(error).__name__}"
        return task.result()


def _retrieve(task: asyncio.Task[str | None]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a lingering check's failure is not logged as never retrieved


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
