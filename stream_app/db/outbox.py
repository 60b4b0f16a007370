"""The transactional outbox: outcome events are written with the state change they report
and published afterwards, so a crash between commit and send cannot lose one."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import BigInteger, Table, any_, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import Event
from stream_app.db.arrays import insert_from_arrays
from stream_app.db.models import OutboxRow

_outbox = cast(Table, OutboxRow.__table__)


async def add_events(session: AsyncSession, events: Sequence[tuple[str, Event]], now: datetime) -> None:
    """Write (topic, event) pairs to the outbox, in order. An event already there is left as it
    is: a commit whose reply was lost is retried, and its event must not fail the retry."""
    await add_records(
        session,
        [
            {"event_id": e.event_id, "topic": topic, "key": e.key.encode(), "payload": e.to_bytes(), "created_at": now}
            for topic, e in events
        ],
    )


async def add_records(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """``add_events`` for rows already serialised (event_id, topic, key, payload, created_at)."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        await insert_from_arrays(session, _outbox, rows, "ON CONFLICT (event_id) DO NOTHING")
    else:
        await session.execute(
            sqlite.insert(OutboxRow).values(list(rows)).on_conflict_do_nothing(index_elements=["event_id"])
        )


# The transaction-level advisory lock that makes one relay at a time publish, across every
# process on the database (the value is arbitrary; it only has to be this service's own).
RELAY_LOCK_KEY = 0x746F6B656E5F6F62  # "token_ob"


async def take_relay_turn(session: AsyncSession) -> bool:
    """Whether this transaction may publish: False while another relay's transaction does.

    One publisher at a time is what keeps a key's events in commit order on its topic: a key's
    outbox ids follow its commit order (each outcome is written under the connection row's
    lock), and a relay sends a batch in id order and commits its marks before the next relay
    can read. The lock ends with the transaction, also when its process dies. SQLite has one
    process, hence one relay."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    return bool(await session.scalar(select(func.pg_try_advisory_xact_lock(RELAY_LOCK_KEY))))


class PendingEvent(NamedTuple):
    id: int
    topic: str
    key: bytes
    payload: bytes


async def pending_events(session: AsyncSession, limit: int) -> list[PendingEvent]:
    """The oldest unpublished events, in id order. Call it after ``take_relay_turn``."""
    c = _outbox.c
    query = select(c.id, c.topic, c.key, c.payload).where(c.published_at.is_(None)).order_by(c.id).limit(limit)
    # Never SKIP LOCKED: jumping past rows another relay holds would publish a key's later event
    # before its earlier one. Under the turn nobody else holds them; a relay that takes no turn
    # (an older version during a rolling upgrade) is waited for rather than overtaken.
    query = query.with_for_update()
    return [PendingEvent(*row) for row in await session.execute(query)]


async def mark_published(session: AsyncSession, ids: Sequence[int], now: datetime) -> None:
    if not ids:
        return
    c = _outbox.c
    if session.get_bind().dialect.name == "postgresql":  # one statement whatever the count
        among = c.id == any_(bindparam("ids", list(ids), type_=postgresql.ARRAY(BigInteger)))
    else:
        among = c.id.in_(ids)
    await session.execute(update(_outbox).where(among).values(published_at=now))
