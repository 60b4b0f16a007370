"""`token.expiring` → refreshes by the engine, hundreds in flight; outcomes leave through the outbox."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

from faust.types import EventT

from agents.batch_consumer import BatchConsumer, refresh_group_id
from agents.context import WorkerContext
from agents.dispatch import Dispatcher
from schemas import TokenExpiring
from stream_app.ingest import InvalidEvent, parse_event
from stream_app.provenance import RequestAdmission

log = logging.getLogger(__name__)


def attach(context: WorkerContext) -> None:
    engine = context.service.engine

    async def handle(event: TokenExpiring | InvalidEvent, record: EventT[bytes]) -> None:
        if isinstance(event, InvalidEvent):
            await context.dead_letter(record, str(event))
            return
        result = await context.until_done(
            # Never wait for another process's refresh: it answers this request, and a job that
            # waits would hold its partition's acks, a rebalance and a shutdown (a holder that
            # died lets its lease lapse, and the scan asks again).
            functools.partial(engine.refresh, event.user_id, event.platform, trigger=event.reason, wait_for_others=0),
            "refreshing a token",
        )
        if result.reason == "decryption_error":
            # The connection is marked `error`; the request is kept for an operator to replay.
            await context.dead_letter(record, "stored token cannot be decrypted; connection marked error")

    # Future dates and wrong signatures refused; manual / on_demand limited per connection.
    admission = RequestAdmission(context.settings)

    def route(record: EventT[bytes]) -> Callable[[], Awaitable[None]] | None:
        event = admission.admit(_parsed(record), record)
        if _already_in_flight(event):
            return None
        return functools.partial(context.guarded, record, functools.partial(handle, event))

    consumer = BatchConsumer(
        context.app,
        context.settings,
        context.topic_names["token.expiring"],
        group_id=refresh_group_id(context.settings.kafka_app_id),
        route=route,
        dispatcher=lambda acks: Dispatcher(
            acks, max_in_flight=context.settings.max_refreshes_in_flight, on_escape=context.last_resort
        ),
        # As long as a refresh in flight can take to end (TokenService.aclose waits as long).
        drain_seconds=2 * context.settings.longest_call_seconds,
    )
    context.add_consumer(consumer)

    def _already_in_flight(event: TokenExpiring | InvalidEvent) -> bool:
        """A scan's repeat request for a connection this process is refreshing (or waiting to,
        e.g. through a short rate limit) needs no slot: that refresh answers it, and a crash
        re-delivers the earlier event, which is acked in offset order before this one."""
        if isinstance(event, InvalidEvent):
            return False  # the job dead-letters it
        return event.reason in ("scheduled", "bulk") and engine.in_flight(event.user_id, event.platform)


def _parsed(record: EventT[bytes]) -> TokenExpiring | InvalidEvent:
    """The record's event, or why it is not one (parsed once, in the agent's loop)."""
    try:
        return parse_event(TokenExpiring, record.value)
    except InvalidEvent as exc:
        return exc
