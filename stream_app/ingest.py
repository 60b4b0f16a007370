"""Turning raw input records into validated events, and `connection.created` into a row."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import ValidationError

from schemas import ConnectionCreated, Event
from stream_app.catalog import is_known, platform
from stream_app.clock import to_naive_utc, utc_now
from stream_app.crypto import TokenBinding, TokenCipher, TokenField, UnknownKeyError
from stream_app.db import ConnectionStatus, Database
from stream_app.db.bulk import upsert_connections
from stream_app.db.processed import mark_processed_once
from stream_app.decisions import RefreshPolicy
from stream_app.errors import DecryptionError, TokenRefreshError

MAX_EVENT_BYTES = 1024 * 1024
E = TypeVar("E", bound=Event)


class InvalidEvent(TokenRefreshError):
    """An input record that cannot be processed; its message is the dead-letter reason."""


def parse_event(model: type[E], raw: bytes | None) -> E:
    """The record as a validated event; anything else, whatever the bytes, is an InvalidEvent."""
    if raw is None:
        raise InvalidEvent("empty record (no value)")
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"record of {len(raw)} bytes exceeds {MAX_EVENT_BYTES}")
    try:
        event = model.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidEvent(_describe(exc)) from None
    except Exception as exc:  # a validator's own failure, e.g. OverflowError converting a date to UTC
        raise InvalidEvent(f"record: cannot be validated ({type(exc).__name__})") from None
    if not is_known(event.platform):
        # Not quoted: the reason is readable in the dead letter and the log, and a token of
        # the platform key's shape (32 lower-case hex) is one.
        raise InvalidEvent(f"platform: unknown platform ({len(event.platform)} characters, not in the catalog)")
    return event


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_input=False, include_url=False)[:5]:
        where = ".".join(str(part) for part in error["loc"]) or "record"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)


class Recorded(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # this very event was applied before (a producer retry, a replay)
    STALE = "stale"  # an event older than (or as old as) the one the row already holds


async def record_connection(
    database: Database, cipher: TokenCipher, event: ConnectionCreated, policy: RefreshPolicy
) -> Recorded:
    """``record_connections`` for one event (its token checks raise InvalidEvent)."""
    return (await record_connections(database, [(event, prepare_connection(cipher, event, policy))]))[0]


def prepare_connection(cipher: TokenCipher, event: ConnectionCreated, policy: RefreshPolicy) -> dict[str, Any]:
    """The row ``event`` stores, its tokens re-encrypted bound to the row: CPU only, before any
    transaction. Raises InvalidEvent for a token that is not a valid ciphertext."""
    return connection_values(event, policy) | bound_tokens(cipher, event)


async def record_connections(
    database: Database, prepared: Sequence[tuple[ConnectionCreated, dict[str, Any]]]
) -> list[Recorded]:
    """Store new or re-authorised connections (``prepare_connection``'s rows) in one transaction,
    with their event ids, so a duplicate has its effect once; what became of each, in order.

    Applying them at once is the same as applying them in order: of several events for one
    connection, only the latest (by ``occurred_at``; the first of equals) can last, and it
    lasts only if it is later than what the row holds."""
    now = utc_now()
    async with database.transaction() as session:
        new = await mark_processed_once(session, [(event.event_id, event.default_topic) for event, _ in prepared], now)
        latest: dict[tuple[uuid.UUID, str], int] = {}
        first_of_id: dict[uuid.UUID, int] = {}
        for index, (event, _) in enumerate(prepared):
            # Applied before, or a copy of an id earlier in this batch (a duplicate, whatever it says).
            if event.event_id not in new or first_of_id.setdefault(event.event_id, index) != index:
                continue
            key = (event.user_id, event.platform)
            if key not in latest or event.occurred_at > prepared[latest[key]][0].occurred_at:
                latest[key] = index
        changed = await upsert_connections(session, [prepared[index][1] for index in latest.values()])
    outcome = []
    seen: set[uuid.UUID] = set()
    for index, (event, _) in enumerate(prepared):
        key = (event.user_id, event.platform)
        if event.event_id not in new or event.event_id in seen:  # applied before, or earlier in this batch
            outcome.append(Recorded.DUPLICATE)
        elif latest[key] == index and key in changed:
            outcome.append(Recorded.STORED)
        else:
            outcome.append(Recorded.STALE)
        seen.add(event.event_id)
    return outcome


def bound_tokens(cipher: TokenCipher, event: ConnectionCreated) -> dict[str, str | None]:
    """The event's tokens, checked, then encrypted under the current key and bound to their
    row and column. A token that is not a valid ciphertext makes the whole event invalid."""
    bound: dict[str, str | None] = {}
    fields: tuple[tuple[TokenField, str | None], ...] = (
        ("access_token", event.access_token),
        ("refresh_token", event.refresh_token),
    )
    for field, ciphertext in fields:
        if ciphertext is None:
            bound[field] = None
            continue
        binding = TokenBinding(event.user_id, event.platform, field)
        try:
            plaintext = cipher.decrypt(ciphertext, binding)
        except UnknownKeyError as exc:  # a key deploy that has not reached this worker: replayable
            raise InvalidEvent(f"{field}: {exc}; replay it once that key is configured") from None
        except DecryptionError as exc:
            raise InvalidEvent(f"{field}: not a valid ciphertext under the configured keys ({exc})") from None
        bound[field] = cipher.encrypt(plaintext, binding)
    return bound


def connection_values(event: ConnectionCreated, policy: RefreshPolicy) -> dict[str, Any]:
    """The row a `connection.created` event describes, but for its tokens (``bound_tokens``)."""
    expires_at = to_naive_utc(event.token_expires_at)
    # The token's lifetime is learnt from the first refresh's expires_in; until then the full
    # buffer applies (the event does not say when the token was issued).
    refreshable = platform(event.platform).refreshable
    return {
        "user_id": event.user_id,
        "platform": event.platform,
        "token_expires_at": expires_at,
        "token_lifetime_seconds": None,
        "refresh_due_at": policy.refresh_at(expires_at, None) if refreshable else None,
        "scopes": " ".join(event.scopes) if event.scopes else None,
        "status": ConnectionStatus.CONNECTED,
        "last_sync_status": "pending",
        "last_sync_error": None,
        "connected_at": to_naive_utc(event.occurred_at),
        "updated_at": utc_now(),
        "refresh_requested_at": None,
    }
