"""Set-at-a-time versions of the connection queries, for batches (one statement for many rows).

Each has the same meaning as its one-row counterpart in ``connections`` and ``leases``. On
PostgreSQL a batch travels as arrays (``= ANY(:ids)``, ``unnest``): one bind parameter per
column whatever the batch size, so the statement is compiled and prepared once and the rows
are found by index; SQLite (in-process, no round trips) takes plain IN lists.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, any_, bindparam, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from stream_app.db.arrays import arrays_of, insert_from_arrays, unnest
from stream_app.db.clock import db_now
from stream_app.db.connections import update_fenced
from stream_app.db.models import ConnectionRow

# Rows per statement: well under PostgreSQL's 32,767 bind parameters for the widest row (an
# inserted connection, ~20 columns), and SQLite's 32,766.
MAX_ROWS_PER_STATEMENT = 500

_connections = cast(Table, ConnectionRow.__table__)


@dataclass(frozen=True, slots=True)
class ConnectionState:
    """What a claim reads of a connection to decide (``decide_refresh``): plain values, not an
    ORM object (materialising batches of rows as ORM objects was a worker's CPU, twice over
    with the lease's RETURNING)."""

    id: uuid.UUID
    user_id: uuid.UUID
    platform: str
    status: str | None
    token_expires_at: datetime | None
    token_lifetime_seconds: int | None
    refresh_token: str | None
    refresh_not_before: datetime | None


@dataclass(frozen=True, slots=True)
class LeasedConnection(ConnectionState):
    """A connection as its refresh lease was taken: what the refresh decides on, and what its
    outcome is fenced on (``version``). Plain values, read by Core from the lease's RETURNING."""

    version: int
    consecutive_failures: int


def _columns_of(cls: type) -> list[Any]:
    return [_connections.c[field.name] for field in fields(cls)]


_STATE_COLUMNS = _columns_of(ConnectionState)
_LEASED_COLUMNS = _columns_of(LeasedConnection)


async def get_connections(
    session: AsyncSession, keys: Sequence[tuple[uuid.UUID, str]]
) -> dict[tuple[uuid.UUID, str], ConnectionState]:
    """What deciding reads of the rows of the (user_id, platform) ``keys`` that exist."""
    wanted = set(keys)
    found: dict[tuple[uuid.UUID, str], ConnectionState] = {}
    for chunk in _chunks(keys):
        # By user id (the unique index's leading column), then the exact pairs.
        query = select(*_STATE_COLUMNS).where(
            _among(session, _connections.c.user_id.type, _connections.c.user_id, [k[0] for k in chunk])
        )
        for values in await session.execute(query):
            state = ConnectionState(*values)
            if (state.user_id, state.platform) in wanted:
                found[(state.user_id, state.platform)] = state
    return found


async def acquire_leases(
    session: AsyncSession, ids: Sequence[uuid.UUID], owner: str, *, ttl: float
) -> dict[uuid.UUID, LeasedConnection]:
    """``acquire_lease`` for many rows: those nobody holds an unexpired lease on are taken, and
    returned as they are now."""
    taken: dict[uuid.UUID, LeasedConnection] = {}
    expiry = _connections.c.refresh_lease_expires_at
    for chunk in _chunks(ids):
        result = await session.execute(
            update(_connections)
            .where(
                _among(session, _connections.c.id.type, _connections.c.id, chunk),
                or_(expiry.is_(None), expiry < db_now()),
            )
            .values(refresh_lease_owner=owner, refresh_lease_expires_at=db_now(ttl))
            .returning(*_LEASED_COLUMNS)
        )
        for values in result:
            row = LeasedConnection(*values)
            taken[row.id] = row
    return taken


async def take_over_lease(
    session: AsyncSession, connection_id: uuid.UUID, dead_owner: str, owner: str, *, ttl: float
) -> LeasedConnection | None:
    """Take a lease whose holder is known to be dead, if it still holds it."""
    result = await session.execute(
        update(_connections)
        .where(_connections.c.id == connection_id, _connections.c.refresh_lease_owner == dead_owner)
        .values(refresh_lease_owner=owner, refresh_lease_expires_at=db_now(ttl))
        .returning(*_LEASED_COLUMNS)
    )
    values = result.first()
    return None if values is None else LeasedConnection(*values)


async def forget_refresh_requests(session: AsyncSession, ids: Sequence[uuid.UUID]) -> None:
    """``forget_refresh_request`` for many rows."""
    for chunk in _chunks(ids):
        await session.execute(
            update(ConnectionRow)
            .where(_among(session, ConnectionRow.id.type, ConnectionRow.id, chunk))
            .values(refresh_requested_at=None)
        )


async def upsert_connections(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> set[tuple[uuid.UUID, str]]:
    """Insert or replace connections from `connection.created` events (at most one row per
    connection); the (user_id, platform) of those that changed.

    An event older than (or as old as) the one that last connected the row is ignored, so a
    replayed or reordered event can never put back a refresh token that has since rotated."""
    changed: set[tuple[uuid.UUID, str]] = set()
    if not rows:
        return changed
    names = [name for name in rows[0] if name not in ("user_id", "platform")]
    fresh = {"version": 0, "consecutive_failures": 0}
    for chunk in _chunks(rows):
        complete = [{"id": uuid.uuid4(), **fresh, **row} for row in chunk]
        result: Result[Any]
        if session.get_bind().dialect.name == "postgresql":
            assignments = ", ".join(f"{name} = EXCLUDED.{name}" for name in names)
            result = await insert_from_arrays(
                session,
                _connections,
                complete,
                "ON CONFLICT (user_id, platform) DO UPDATE SET "
                f"{assignments}, version = platform_connections.version + 1, consecutive_failures = 0 "
                "WHERE platform_connections.connected_at IS NULL "
                "OR platform_connections.connected_at < EXCLUDED.connected_at "
                "RETURNING user_id, platform",
            )
        else:
            statement = sqlite.insert(ConnectionRow).values(complete)
            replaced: dict[str, Any] = {name: statement.excluded[name] for name in names}
            replaced["version"] = ConnectionRow.version + 1
            replaced["consecutive_failures"] = 0
            result = await session.execute(
                statement.on_conflict_do_update(
                    index_elements=["user_id", "platform"],
                    set_=replaced,
                    where=or_(
                        ConnectionRow.connected_at.is_(None),
                        ConnectionRow.connected_at < statement.excluded.connected_at,
                    ),
                ).returning(ConnectionRow.user_id, ConnectionRow.platform)
            )
        returned: Sequence[Any] = result.all()
        changed.update((user_id, platform) for user_id, platform in returned)
    return changed


FencedWrite = tuple[LeasedConnection, str, dict[str, Any]]  # the row as leased, the lease owner, new values


async def update_fenced_many(session: AsyncSession, writes: Sequence[FencedWrite]) -> list[bool]:
    """``update_fenced`` for many rows; whether each was applied, in order.

    On PostgreSQL, writes that set the same columns go as one ``UPDATE … FROM unnest(…)``;
    elsewhere (SQLite, in-process) one statement per row costs no round trip anyway."""
    if session.get_bind().dialect.name != "postgresql":
        return [await update_fenced(session, row, owner, new) for row, owner, new in writes]
    applied = [False] * len(writes)
    by_columns: dict[tuple[str, ...], list[int]] = {}
    for index, (_, _, new) in enumerate(writes):
        by_columns.setdefault(tuple(sorted(new)), []).append(index)
    for names, indexes in by_columns.items():
        for chunk in _chunks(indexes):
            updated = await _update_from_arrays(session, names, [writes[i] for i in chunk])
            for i in chunk:
                applied[i] = writes[i][0].id in updated
    return applied


async def _update_from_arrays(
    session: AsyncSession, names: tuple[str, ...], writes: Sequence[FencedWrite]
) -> set[uuid.UUID]:
    """One ``UPDATE … FROM unnest(arrays)``: one array per column, one element per row."""
    columns = ("id", "version", "refresh_lease_owner", *names)
    rows = [{"id": row.id, "version": row.version, "refresh_lease_owner": owner, **new} for row, owner, new in writes]
    assignments = ", ".join(f"{name} = new.{name}" for name in names)
    statement = text(
        f"UPDATE platform_connections AS c SET version = c.version + 1, refresh_lease_owner = NULL, "  # noqa: S608
        f"refresh_lease_expires_at = NULL, {assignments} "
        f"FROM {unnest(_connections, columns)} "
        "WHERE c.id = new.id AND c.version = new.version AND c.refresh_lease_owner = new.refresh_lease_owner "
        "RETURNING c.id"
    )
    return set((await session.execute(statement, arrays_of(rows, columns))).scalars())


def _among(session: AsyncSession, type_: Any, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """``column IN values``: as ``= ANY(:array)`` on PostgreSQL (one parameter, one prepared statement)."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(type_)))  # type: ignore[no-any-return]
    return column.in_(values)  # type: ignore[no-any-return]


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[start : start + MAX_ROWS_PER_STATEMENT] for start in range(0, len(items), MAX_ROWS_PER_STATEMENT)]
