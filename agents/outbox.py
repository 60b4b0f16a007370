"""Runs the outbox relay inside the worker, woken by every commit that wrote an event."""

from __future__ import annotations

from agents.context import WorkerContext
from stream_app.failpoints import Failpoints
from stream_app.relay import OutboxRelay


def attach(context: WorkerContext) -> None:
    relay = OutboxRelay(
        context.service.database,
        context.publisher.send_many,
        failpoint=Failpoints(context.settings.failpoints),
    )
    context.service.on_outbox_write(relay.wake)

    @context.app.task
    async def outbox_relay() -> None:
        await relay.run()
