"""Disconnecting a connection (`connection.disconnected`): status `disconnected`, tokens revoked
at the provider where RFC 7009 allows (``stream_app.revocation``), then wiped, and a
`token.revoked` event in the outbox with the state change.

Ordering with the other writers of the row:

- ``occurred_at`` orders a connection's disconnects and (re)connections whatever topic or
  partition they travel on: a disconnect older than (or as old as) the row's ``connected_at``
  is stale and ignored, and an applied one writes its ``occurred_at`` into ``connected_at``, so
  the ingest's rule (only a later `connection.created` replaces a row) keeps an older
  connection from bringing it back. On a disconnected row ``connected_at`` therefore says when
  it was disconnected. A disconnect for a connection never stored leaves a `disconnected` row
  without tokens, so a `connection.created` older than it, read later, stays out.
- The refresh lease is taken before the tokens are read: a refresh in flight ends first (its
  rotated tokens are the ones revoked), and none can start until the row is `disconnected`,
  which no refresh, scan or request takes. The row is written fenced on the version it was
  leased at; a `connection.created` stored meanwhile makes the disconnect look again.

Tokens are wiped once nothing is left to revoke with them (revoked, already invalid at the
provider, no endpoint, revocation disabled). When revocation fails they stay sealed in the
row (the row is `disconnected` all the same, so nothing uses them) so that disconnecting
again revokes them; the event says so (``tokens_wiped`` false, ``error_class``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, get_args

from aiokafka.errors import KafkaError
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.events import ConnectionDisconnected, DisconnectReason, TokenRevoked
from schemas.signing import sign_event
from stream_app.catalog import platform
from stream_app.clock import to_naive_utc, utc_now
from stream_app.crypto import TokenCipher, UnknownKeyError
from stream_app.db import ConnectionRow, ConnectionStatus, Database
from stream_app.db.connections import get_connection, update_fenced
from stream_app.db.disconnections import insert_if_absent, was_processed
from stream_app.db.outbox import add_events
from stream_app.db.processed import mark_processed_once
from stream_app.engine.lease import Lease, Leases
from stream_app.errors import DecryptionError, TokenRefreshError
from stream_app.kafka_client import idempotent_producer
from stream_app.metrics import DISCONNECTS
from stream_app.privacy import UserIdHasher
from stream_app.revocation import Revocation, RevocationClient
from stream_app.settings import Settings

log = logging.getLogger(__name__)

# The outcome event's id is derived from the disconnect's: a disconnect applied again after a
# crash before its commit publishes under the same id (consumers dedupe on it).
_EVENT_NAMESPACE = uuid.UUID("5b0d8f1e-6f4a-4f57-9a53-7d0f3c2a9e11")


class Disconnected(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # this very event was applied before
    STALE = "stale"  # the connection was (re)connected at or after the disconnect's occurred_at


@dataclass(frozen=True)
class DisconnectResult:
    outcome: Disconnected
    event: TokenRevoked | None = None


class Disconnector:
    def __init__(
        self,
        database: Database,
        cipher: TokenCipher,
        revocations: RevocationClient,
        topics: dict[str, str],
        *,
        lease_seconds: float,
        hasher: UserIdHasher,
        on_stored: Callable[[uuid.UUID, str], None] = lambda *_: None,
    ) -> None:
        self._db = database
        self._cipher = cipher
        self._revocations = revocations
        self._topic = topics["token.revoked"]
        self._leases = Leases(database, lease_seconds)
        self._hash = hasher
        self._on_stored = on_stored

    async def apply(self, event: ConnectionDisconnected) -> DisconnectResult:
        tag = f"[{event.platform}][{self._hash(event.user_id)}]"
        while True:
            async with self._db.transaction() as session:
                if await was_processed(session, event.event_id):
                    return DisconnectResult(Disconnected.DUPLICATE)
                row = await get_connection(session, event.user_id, event.platform)
                if row is None:
                    stored = await self._store_absent(session, event)
                    if stored is None:
                        continue  # a `connection.created` was stored meanwhile: look again
                    log.info("%s Disconnected (no connection stored)", tag)
                    return DisconnectResult(Disconnected.APPLIED, stored)
                if _stale(row, event):
                    await mark_processed_once(session, [(event.event_id, event.default_topic)], utc_now())
                    log.info("%s Disconnect %s is older than the connection; ignored", tag, event.event_id)
                    return DisconnectResult(Disconnected.STALE)
                held = await self._leases.acquire_many(session, [row.id])
            if row.id not in held:
                log.debug("%s A refresh is in flight; the disconnect waits for it", tag)
                await self._leases.wait_for_release(row.id)
                continue
            lease, _ = held[row.id]
            result = await self._disconnect_leased(event, lease, tag)
            if result is not None:
                return result

    async def _disconnect_leased(
        self, event: ConnectionDisconnected, lease: Lease, tag: str
    ) -> DisconnectResult | None:
        """Revoke and write, under the lease; None when the row changed meanwhile."""
        try:
            async with lease.kept_alive():
                async with self._db.sessions() as session:
                    row = await get_connection(session, event.user_id, event.platform)
                if row is None or row.refresh_lease_owner != lease.owner or _stale(row, event):
                    return None
                revocation = await self._revoke(row, tag)
                outcome = _outcome_event(event, revocation)
                values = _disconnected_values(event, wipe=revocation.settled)
                async with self._db.transaction() as session:
                    if not await update_fenced(session, row, lease.owner, values):
                        return None
                    lease.released = True
                    await mark_processed_once(session, [(event.event_id, event.default_topic)], utc_now())
                    await add_events(session, [(self._topic, outcome)], utc_now())
        finally:
            await lease.release()  # a no-op once the write released it
        self._on_stored(event.user_id, event.platform)
        DISCONNECTS.labels(event.platform, revocation.outcome).inc()
        log.info("🔌 %s Disconnected; revocation: %s", tag, revocation.outcome)
        return DisconnectResult(Disconnected.APPLIED, outcome)

    async def _revoke(self, row: ConnectionRow, tag: str) -> Revocation:
        try:
            refresh_token = self._cipher.decrypt_column(row, "refresh_token") if row.refresh_token else None
            access_token = self._cipher.decrypt_column(row, "access_token") if row.access_token else None
        except UnknownKeyError as exc:
            log.error("🔑 %s Stored tokens are under key id %s, not configured here: not revoked", tag, exc.key_id)
            return Revocation(
                "failed", None, "unknown_key", f"stored tokens are under key id {exc.key_id}, not configured"
            )
        except DecryptionError:
            log.error("%s Stored tokens cannot be decrypted: not revoked", tag)
            return Revocation("failed", None, "decryption_error", "stored tokens cannot be decrypted")
        revocation = await self._revocations.revoke(
            platform(row.platform), refresh_token=refresh_token, access_token=access_token
        )
        if revocation.outcome == "failed":
            log.warning("%s Revocation at the provider failed (%s); tokens kept sealed", tag, revocation.error_class)
        return revocation

    async def _store_absent(self, session: AsyncSession, event: ConnectionDisconnected) -> TokenRevoked | None:
        """A disconnected row without tokens for a connection never stored, and its event (None:
        a row was stored meanwhile)."""
        if not await insert_if_absent(session, _disconnected_values(event, wipe=True) | _key(event)):
            return None
        outcome = _outcome_event(event, Revocation("no_token"))
        await mark_processed_once(session, [(event.event_id, event.default_topic)], utc_now())
        await add_events(session, [(self._topic, outcome)], utc_now())
        return outcome


def _key(event: ConnectionDisconnected) -> dict[str, Any]:
    return {"user_id": event.user_id, "platform": event.platform}


def _stale(row: ConnectionRow, event: ConnectionDisconnected) -> bool:
    occurred = to_naive_utc(event.occurred_at)
    return row.connected_at is not None and occurred is not None and row.connected_at >= occurred


def _disconnected_values(event: ConnectionDisconnected, *, wipe: bool) -> dict[str, Any]:
    now = utc_now()
    values: dict[str, Any] = {
        "status": ConnectionStatus.DISCONNECTED,
        "connected_at": to_naive_utc(event.occurred_at),  # the watermark a later connection must pass
        "updated_at": now,
        "token_expires_at": None,
        "refresh_due_at": None,
        "refresh_not_before": None,
        "refresh_requested_at": None,
    }
    if wipe:
        values |= {"access_token": None, "refresh_token": None, "token_lifetime_seconds": None}
    return values


def _outcome_event(event: ConnectionDisconnected, revocation: Revocation) -> TokenRevoked:
    return TokenRevoked(
        event_id=uuid.uuid5(_EVENT_NAMESPACE, str(event.event_id)),
        user_id=event.user_id,
        platform=event.platform,
        reason=event.reason,
        revocation=revocation.outcome,
        revoked_token_type=revocation.token_type,
        tokens_wiped=revocation.settled,
        error_class=revocation.error_class,
        error=revocation.error,
        disconnect_event_id=event.event_id,
    )


async def publish_disconnect(
    settings: Settings,
    user_id: uuid.UUID,
    platform_key: str,
    *,
    reason: str = "operator",
    occurred_at: datetime | None = None,
) -> ConnectionDisconnected:
    """Publish a `connection.disconnected` as a producer would (acks=all, idempotent), signed
    with the first PRODUCER_SIGNING_KEYS entry when keys are configured; the worker applies it.
    Raises TokenRefreshError (one line) for an unknown platform or reason, or a broker away."""
    platform(platform_key)  # an unknown platform fails here, not in a dead letter
    fields: dict[str, Any] = {"user_id": user_id, "platform": platform_key, "reason": reason}
    if occurred_at is not None:
        fields["occurred_at"] = occurred_at
    try:
        event = ConnectionDisconnected(**fields)
    except ValidationError:
        raise TokenRefreshError(f"--reason: not one of {', '.join(get_args(DisconnectReason))}") from None
    headers = None
    keys = settings.signing_keys()
    if keys:
        key_id, secret = next(iter(keys.items()))
        headers = sign_event(event, key_id, secret)
    topic = settings.topic_names()["connection.disconnected"]
    producer = idempotent_producer(settings, request_timeout_ms=15_000)
    try:
        await producer.start()
        await producer.send_and_wait(topic, event.to_bytes(), key=event.key.encode(), headers=headers)
    except KafkaError as exc:
        raise TokenRefreshError(f"Kafka: cannot publish to {topic} ({type(exc).__name__})") from None
    finally:
        await producer.stop()
    return event
