"""Thin Faust agents and timers: decode, call the engine, route the outcome."""

from __future__ import annotations

from typing import Any

import faust

from agents import bulk, connections, disconnections, http_api, outbox, refresh, scheduler, upkeep
from agents.context import WorkerContext
from stream_app.service import TokenService


def register(app: faust.App, service: TokenService) -> WorkerContext:
    context = WorkerContext(app, service)
    for module in (connections, refresh, scheduler, outbox, upkeep, http_api, disconnections, bulk):
        module.attach(context)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode types receivers too narrowly
    async def close_service(sender: Any, **_: Any) -> None:
        """Release the producer, the HTTP pool and the database engine once the consumers have
        stopped (Faust's, then the batch consumers, which let their work in flight end)."""
        await context.stop()
        await context.publisher.stop()
        await service.aclose()

    return context
