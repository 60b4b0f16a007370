"""`connection.created` → a stored connection, and an immediate refresh request if it is due."""

from __future__ import annotations

import functools
import logging

from faust.types import EventT, StreamT

from agents.context import WorkerContext
from schemas import ConnectionCreated, TokenExpiring
from stream_app.catalog import platform
from stream_app.clock import utc_now
from stream_app.db import ConnectionRow
from stream_app.decisions import Action, decide_refresh
from stream_app.ingest import InvalidEvent, Recorded, connection_values, parse_event, record_connection

log = logging.getLogger(__name__)


def attach(context: WorkerContext) -> None:
    service = context.service

    async def handle(record: EventT[bytes]) -> None:
        try:
            event = parse_event(ConnectionCreated, record.value)
            recorded = await context.until_done(
                functools.partial(record_connection, service.database, service.cipher, event, service.policy),
                "storing a connection",
            )
        except InvalidEvent as exc:
            await context.dead_letter(record, str(exc))
            return
        tag = f"[{event.platform}][{service.hash_user_id(event.user_id)}]"
        log.info("%s Connection event %s: %s", tag, event.event_id, recorded)
        if recorded is Recorded.STORED and _due(context, event):
            request = TokenExpiring(
                user_id=event.user_id,
                platform=event.platform,
                token_expires_at=event.token_expires_at,
                reason="scheduled",
            )
            await context.until_done(
                functools.partial(context.publish, "token.expiring", request), "requesting a refresh"
            )

    # In order, one at a time: a connection's events must apply in the order they were produced.
    # `guarded` never raises (but CancelledError): Faust would ack the record of an agent that
    # raised, losing it; every record here ends processed or dead-lettered.
    @context.app.agent(context.topic("connection.created"), name="connection_created")
    async def connection_created(stream: StreamT[bytes]) -> None:
        async for record in stream.events():
            await context.guarded(record, handle)


def _due(context: WorkerContext, event: ConnectionCreated) -> bool:
    """Whether the new token already falls inside the scan's window (the scan may not come first)."""
    policy = context.service.policy
    row = ConnectionRow(**connection_values(event, policy))
    decision = decide_refresh(row, platform(event.platform), utc_now(), policy, "scheduled")
    return decision.action is not Action.SKIP
