"""`connection.created` → stored connections, and an immediate refresh request for the due ones.

Records are read in batches (agents.batch_consumer, group ``<KAFKA_APP_ID>-ingest``) and
stored in batches: those that arrive while a batch is in the database go together in the next
one (one transaction, one produce batch for the due requests). Batches run one at a time, in
the order their records were read, and each record is acked once its batch is done, in offset
order: a connection's events apply in the order they were produced, and the committed offset
never passes a record that was not stored.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from typing import Any

from faust.types import EventT

from agents.batch_consumer import BatchConsumer, ingest_group_id
from agents.context import WorkerContext
from agents.dispatch import Dispatcher
from schemas import ConnectionCreated, TokenExpiring
from stream_app.batching import Coalescer
from stream_app.catalog import platform
from stream_app.clock import utc_now
from stream_app.db import ConnectionRow
from stream_app.decisions import Action, decide_refresh
from stream_app.ingest import InvalidEvent, Recorded, parse_event, prepare_connection, record_connections
from stream_app.provenance import Provenance

log = logging.getLogger(__name__)

# Records stored in one transaction at most; also how far the agent reads ahead of them.
MAX_BATCH = 500

Prepared = tuple[EventT[bytes], ConnectionCreated, dict[str, Any]]


def attach(context: WorkerContext) -> None:
    service = context.service
    provenance = Provenance(context.settings)

    def prepare(record: EventT[bytes]) -> Prepared:
        event = parse_event(ConnectionCreated, record.value)
        provenance.check_connection(event, record)
        return record, event, prepare_connection(service.cipher, event, service.policy)

    async def store(records: Sequence[EventT[bytes]]) -> list[Exception | None]:
        """One batch, every record ending stored or dead-lettered (never raises but for
        CancelledError, after retrying transient failures)."""
        prepared: list[Prepared] = []
        refused: list[tuple[EventT[bytes], str]] = []
        for record in records:
            try:
                prepared.append(prepare(record))
            except InvalidEvent as exc:
                refused.append((record, str(exc)))
            except Exception as exc:  # a failure nobody anticipated: the record is kept, not lost
                log.exception("Unexpected failure reading %s[%d]@%d", *_where(record))
                refused.append((record, f"processing error: {type(exc).__name__}"))
        # All of the batch's dead letters in flight at once (sent in order, acknowledged
        # together): one at a time, a flood of bad records was read at a broker round trip each.
        await asyncio.gather(*(context.dead_letter(record, reason) for record, reason in refused))
        try:
            await _store_and_request(context, prepared)  # transient failures are retried inside
        except Exception as exc:
            # One record refused for good (a constraint): store them one by one, so that only
            # it goes to the dead-letter topic.
            log.warning("Storing a batch of connections refused (%s); storing each alone", type(exc).__name__)
            for one in prepared:
                await context.guarded(one[0], functools.partial(_store_one, context, one))
        return [None] * len(records)

    batches: Coalescer[EventT[bytes], None] = Coalescer(store, max_batch=MAX_BATCH)

    consumer = BatchConsumer(
        context.app,
        context.settings,
        context.topic_names["connection.created"],
        group_id=ingest_group_id(context.settings.kafka_app_id),
        route=lambda record: functools.partial(batches.submit, record),
        dispatcher=lambda acks: Dispatcher(acks, max_in_flight=MAX_BATCH, on_escape=context.last_resort, gauge=None),
        # A batch stores in one transaction and publishes its due requests: well within this.
        drain_seconds=2 * context.settings.http_timeout_seconds,
    )
    context.add_consumer(consumer)


async def _store_one(context: WorkerContext, prepared: Prepared, _record: EventT[bytes]) -> None:
    await _store_and_request(context, [prepared])


async def _store_and_request(context: WorkerContext, prepared: Sequence[Prepared]) -> None:
    service = context.service
    recorded = await context.until_done(
        lambda: record_connections(service.database, [(event, values) for _, event, values in prepared]),
        "storing connections",
    )
    due: list[TokenExpiring] = []
    for (_, event, values), outcome in zip(prepared, recorded, strict=True):
        tag = f"[{event.platform}][{service.hash_user_id(event.user_id)}]"
        log.info("%s Connection event %s: %s", tag, event.event_id, outcome)
        if outcome is Recorded.STORED:
            service.token_cache.invalidate(event.user_id, event.platform)  # for an API in this process
            if _due(context, event, values):
                due.append(
                    TokenExpiring(
                        user_id=event.user_id,
                        platform=event.platform,
                        token_expires_at=event.token_expires_at,
                        reason="scheduled",
                    )
                )
    if due:
        await context.until_done(lambda: context.publish_many("token.expiring", due), "requesting refreshes")


def _due(context: WorkerContext, event: ConnectionCreated, values: dict[str, Any]) -> bool:
    """Whether the new token already falls inside the scan's window (the scan may not come first)."""
    row = ConnectionRow(**values)
    decision = decide_refresh(row, platform(event.platform), utc_now(), context.service.policy, "scheduled")
    return decision.action is not Action.SKIP


def _where(record: EventT[bytes]) -> tuple[str, int, int]:
    return record.message.topic, record.message.partition, record.message.offset
