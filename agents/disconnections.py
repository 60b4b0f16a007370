"""`connection.disconnected` → disconnected connections (``stream_app.disconnect``).

Read by a consumer group of its own (``<KAFKA_APP_ID>-disconnect``). A few disconnects run at
once; those of one connection one after the other, in offset order (each may wait for a
refresh in flight, and calls the provider's revocation endpoint). A record that is not a
valid, believable event goes to ``<topic>.dlq`` with the reason, as on the other input topics.
"""

from __future__ import annotations

import functools
import logging

from faust.types import EventT

from agents.batch_consumer import BatchConsumer
from agents.context import WorkerContext
from agents.dispatch import Dispatcher
from schemas.events import ConnectionDisconnected
from stream_app.disconnect import Disconnector
from stream_app.ingest import InvalidEvent, parse_event
from stream_app.keyed_lock import KeyedLocks
from stream_app.provenance import Provenance
from stream_app.revocation import RevocationClient

log = logging.getLogger(__name__)

MAX_DISCONNECTS_IN_FLIGHT = 16


def disconnect_group_id(app_id: str) -> str:
    """The consumer group of the worker's `connection.disconnected` reading."""
    return f"{app_id}-disconnect"


def attach(context: WorkerContext) -> None:
    service = context.service
    settings = context.settings
    provenance = Provenance(settings)
    disconnector = Disconnector(
        service.database,
        service.cipher,
        RevocationClient(service.http, settings),
        context.topic_names,
        lease_seconds=settings.refresh_lease_seconds,
        hasher=service.hash_user_id,
        on_stored=service.token_cache.invalidate,
    )
    locks = KeyedLocks()

    async def handle(record: EventT[bytes]) -> None:
        try:
            event = parse_event(ConnectionDisconnected, record.value)
            provenance.check_disconnection(event, record)
        except InvalidEvent as exc:
            await context.dead_letter(record, str(exc))
            return
        async with locks.hold((event.user_id, event.platform)):
            await context.until_done(functools.partial(disconnector.apply, event), "disconnecting")

    consumer = BatchConsumer(
        context.app,
        settings,
        context.topic_names["connection.disconnected"],
        group_id=disconnect_group_id(settings.kafka_app_id),
        route=lambda record: functools.partial(context.guarded, record, handle),
        dispatcher=lambda acks: Dispatcher(
            acks, max_in_flight=MAX_DISCONNECTS_IN_FLIGHT, on_escape=context.last_resort, gauge=None
        ),
        # A disconnect may wait for a refresh in flight (its lease), then call the provider.
        drain_seconds=settings.refresh_lease_seconds + 2 * settings.longest_call_seconds,
    )
    context.on_start(consumer.start)
    context.on_stop(consumer.stop)
