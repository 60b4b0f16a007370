"""The expiry scan's queries on `platform_connections`: claim a page of due connections.

A page is read in (refresh_due_at, id) order with a keyset cursor over the partial index
``idx_platform_connections_refresh_due`` (a row comparison: every page starts in the index
where the last one ended, instead of walking it from its start and filtering), locked, and
marked requested with one ``UPDATE ... WHERE id = ANY(...)``. The scan commits the claim at
once, before the page's requests are sent (no row lock is held across a broker round trip),
and gives back the marks of a page whose delivery failed (``give_back_marks``).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Integer,
    Select,
    Table,
    Uuid,
    and_,
    any_,
    bindparam,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from stream_app.db.clock import db_now
from stream_app.db.models import REFRESHABLE_STATUSES, ConnectionRow

_table = cast(Table, ConnectionRow.__table__)
_c = _table.c


class DueConnection(NamedTuple):
    id: uuid.UUID
    user_id: uuid.UUID
    platform: str
    token_expires_at: datetime | None
    refresh_due_at: datetime
    # When a refresh was last requested, before this claim (None: never, or done since).
    requested_at: datetime | None


class Cursor(NamedTuple):
    """Where the next page starts: after this (refresh_due_at, id)."""

    refresh_due_at: datetime
    id: uuid.UUID


async def claim_due_page(
    session: AsyncSession,
    *,
    due_by: datetime,
    requested_before: datetime,
    after: Cursor | None,
    limit: int,
    platforms: Sequence[str],
    now: datetime,
) -> list[DueConnection]:
    """Up to ``limit`` refreshable connections on ``platforms`` due by ``due_by``, after
    ``after``, not requested since ``requested_before``, not held back, not leased; in
    (refresh_due_at, id) order, each marked requested at ``now`` in this transaction.

    On PostgreSQL the page is read ``FOR UPDATE SKIP LOCKED``, so the page's rows are this
    transaction's until it ends and the mark never waits for a lock (no deadlock with a
    refresh or a batch of them). Rows another transaction holds are skipped: another scan's
    claim (two scans at once never claim the same row: once that claim commits, its mark
    keeps the row out of every later read until ``requested_before`` passes it), or a row a
    refresh is writing (the next scan has it if it is still due). The other way round, a
    refresh of a claimed row waits for the claim's transaction, so the caller commits it
    before it sends anything: a claim is two statements, a broker round trip can be the
    scan's whole broker deadline (30 s by default)."""
    parameters: dict[str, Any] = {"due_by": due_by, "requested_before": requested_before, "limit": limit}
    if after is not None:
        parameters |= {"after_due": after.refresh_due_at, "after_id": after.id}
    page = due_page(tuple(platforms), after is not None)
    rows = [DueConnection(*row) for row in (await session.execute(page, parameters)).all()]
    await mark_refresh_requested(session, [row.id for row in rows], now)
    return rows


# Built once: a statement's construction costs more than its execution's share of a page.
_MARK_BY_ARRAY = (
    update(_table)
    .where(_c.id == any_(bindparam("ids", type_=postgresql.ARRAY(Uuid()))))
    .values(refresh_requested_at=bindparam("now", type_=DateTime()))
)
_MARK_BY_LIST = (
    update(_table)
    .where(_c.id.in_(bindparam("ids", expanding=True, type_=Uuid())))
    .values(refresh_requested_at=bindparam("now", type_=DateTime()))
)


async def mark_refresh_requested(session: AsyncSession, ids: Sequence[uuid.UUID], now: datetime) -> None:
    if not ids:
        return
    # PostgreSQL: one array parameter, so one statement to prepare whatever the page's size.
    mark = _MARK_BY_ARRAY if session.get_bind().dialect.name == "postgresql" else _MARK_BY_LIST
    await session.execute(mark, {"ids": list(ids), "now": now})


_GIVE_BACK_BY_ARRAY = (
    update(_table)
    .where(
        _c.id == any_(bindparam("ids", type_=postgresql.ARRAY(Uuid()))),
        _c.refresh_requested_at == bindparam("marked", type_=DateTime()),
    )
    .values(refresh_requested_at=bindparam("previous", type_=DateTime()))
)
_GIVE_BACK_BY_LIST = (
    update(_table)
    .where(
        _c.id.in_(bindparam("ids", expanding=True, type_=Uuid())),
        _c.refresh_requested_at == bindparam("marked", type_=DateTime()),
    )
    .values(refresh_requested_at=bindparam("previous", type_=DateTime()))
)


async def give_back_marks(session: AsyncSession, rows: Sequence[DueConnection], marked: datetime) -> None:
    """Undo a committed claim whose requests were not delivered: each row gets back the mark
    it had before (none, or a lost request's earlier one), unless its mark is no longer the
    claim's (a refresh finished and cleared it, or a later scan marked it again).

    One statement per earlier mark: rows repeated by one scan share that scan's time."""
    by_previous: dict[datetime | None, list[uuid.UUID]] = {}
    for row in rows:
        by_previous.setdefault(row.requested_at, []).append(row.id)
    give_back = _GIVE_BACK_BY_ARRAY if session.get_bind().dialect.name == "postgresql" else _GIVE_BACK_BY_LIST
    for previous, ids in by_previous.items():
        await session.execute(give_back, {"ids": ids, "marked": marked, "previous": previous})


@functools.cache
def due_page(platforms: tuple[str, ...], after_cursor: bool) -> Select[Any]:
    """The page's read (parameters ``due_by``, ``requested_before``, ``limit``, and with
    ``after_cursor`` ``after_due`` and ``after_id``), locking its rows and skipping rows
    another transaction holds (on PostgreSQL; SQLite has no row locks and one writer at a
    time)."""
    conditions: list[ColumnElement[bool]] = [
        # The partial index's own predicate, as constants: a plan made for any parameters (a
        # prepared statement's generic plan) can then still use the index.
        _c.status.in_([literal_column(f"'{status}'") for status in REFRESHABLE_STATUSES]),
        _c.refresh_due_at.is_not(None),
        _c.refresh_due_at <= bindparam("due_by", type_=DateTime()),
        _c.platform.in_(platforms),
        or_(
            _c.refresh_requested_at.is_(None), _c.refresh_requested_at < bindparam("requested_before", type_=DateTime())
        ),
        # Held back (failure backoff, a rate limit, an open circuit): not before the hold ends.
        or_(_c.refresh_not_before.is_(None), _c.refresh_not_before <= db_now()),
        # Being refreshed right now; if its holder died, the lease lapses and the row is due again.
        or_(_c.refresh_lease_expires_at.is_(None), _c.refresh_lease_expires_at < db_now()),
    ]
    if after_cursor:
        after = tuple_(bindparam("after_due", type_=DateTime()), bindparam("after_id", type_=Uuid()))
        conditions.append(tuple_(_c.refresh_due_at, _c.id) > after)
    return (
        select(
            _c.id,
            _c.user_id,
            _c.platform,
            _c.token_expires_at,
            _c.refresh_due_at,
            _c.refresh_requested_at.label("requested_at"),
        )
        .where(and_(*conditions))
        .order_by(_c.refresh_due_at, _c.id)
        .limit(bindparam("limit", type_=Integer()))
        .with_for_update(skip_locked=True)
    )
