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

    async def readyz(_request: web.Request) -> web.Response:
        try:
            problem = await asyncio.wait_for(ready(), timeout=5)
        except Exception as exc:
            problem = f"readiness check failed: {type(exc).__name__}"
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
