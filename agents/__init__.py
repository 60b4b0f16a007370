"""Thin Faust agents and timers: decode, call the engine, route the outcome."""

from __future__ import annotations

from typing import Any

import faust

from agents import bulk, connections, disconnections, http_api, outbox, refresh, scheduler, upkeep
from agents.context import WorkerContext
from stream_app.service import TokenService

# How long a stopping worker waits for its queued circuit changes to reach the outbox (a write
# takes milliseconds; longer means the database is away, and they are logged as lost).
CIRCUIT_EVENTS_FLUSH_SECONDS = 5.0


def register(app: faust.App, service: TokenService) -> WorkerContext:
    context = WorkerContext(app, service)
    for module in (connections, refresh, scheduler, outbox, upkeep, http_api, disconnections, bulk):
        module.attach(context)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode types receivers too narrowly
    async def close_service(sender: Any, **_: Any) -> None:
        """Release the producer, the HTTP pool and the database engine once the consumers have
        stopped (Faust's, then the batch consumers, which let their work in flight end)."""
        await context.stop()
        # Circuit changes still queued reach the outbox (the next worker's relay publishes them).
        await service.engine.flush_circuit_events(CIRCUIT_EVENTS_FLUSH_SECONDS)
        await context.publisher.stop()
        await service.aclose()

    return context
