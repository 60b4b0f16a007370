"""`token.expiring` → one refresh by the engine; its outcome event leaves through the outbox."""

from __future__ import annotations

import functools
import logging

from faust.types import StreamT

from agents.context import WorkerContext
from schemas import TokenExpiring
from stream_app.ingest import InvalidEvent, parse_event

log = logging.getLogger(__name__)


def attach(context: WorkerContext) -> None:
    engine = context.service.engine

    @context.app.agent(context.topic("token.expiring"), name="token_expiring")
    async def token_expiring(stream: StreamT[bytes]) -> None:
        async for record in stream.events():
            try:
                event = parse_event(TokenExpiring, record.value)
            except InvalidEvent as exc:
                await context.dead_letter(record, str(exc))
                continue
            await context.until_done(
                functools.partial(engine.refresh, event.user_id, event.platform, trigger=event.reason),
                "refreshing a token",
            )
