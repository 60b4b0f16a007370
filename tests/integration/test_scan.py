"""The expiry scan's claim at the database: an index plan whose every page starts where the
last one ended, marks committed before the page's records are sent (no row lock held across
the broker's round trip: tests/integration/test_scan_locks.py), a failed page's marks given
back while the pages around it are kept, no row claimed by two scans at once, and the same
scan on the embedded SQLite default."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from sqlalchemy import event, insert, select, text

from schemas import TokenExpiring
from stream_app.catalog import REFRESHABLE_PLATFORMS
from stream_app.clock import utc_now
from stream_app.crypto import generate_key
from stream_app.db import ConnectionRow, Database
from stream_app.db.migrate import upgrade_to_head
from stream_app.db.scan import Cursor, claim_due_page
from stream_app.scheduler import scan_expiring
from stream_app.settings import Settings, load_settings

SCAN_INDEX = "idx_platform_connections_refresh_due"


@pytest.fixture
async def database(own_database_url: str) -> AsyncIterator[Database]:
    database = Database(own_database_url)
    yield database
    await database.dispose()


def settings_for(database: Database, page_size: int) -> Settings:
    return load_settings(
        encryption_key=generate_key(),
        database_url=database.url.render_as_string(hide_password=False),
        scan_page_size=page_size,
        scan_interval_seconds=60,
    )


async def insert_connections(database: Database, due: int, later: int = 0) -> list[uuid.UUID]:
    """``due`` connections due now (in the returned order) and ``later`` due in hours; the
    tokens are placeholders (the scan reads none)."""
    now = utc_now()
    rows: list[dict[str, Any]] = []
    for index in range(due + later):
        due_at = now - timedelta(seconds=due - index) if index < due else now + timedelta(hours=2, seconds=index)
        rows.append(
            {
                "id": uuid.uuid4(),
                "user_id": uuid.uuid4(),
                "platform": "spotify",
                "access_token": "placeholder",
                "refresh_token": "placeholder",
                "token_expires_at": due_at + timedelta(minutes=5),
                "status": "connected",
                "version": 0,
                "consecutive_failures": 0,
                "refresh_due_at": due_at,
            }
        )
    async with database.transaction() as session:
        await session.execute(insert(ConnectionRow), rows)
    return [row["user_id"] for row in rows[:due]]


async def marked(database: Database, user_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    async with database.sessions() as session:
        query = select(ConnectionRow.user_id).where(
            ConnectionRow.user_id.in_(user_ids), ConnectionRow.refresh_requested_at.is_not(None)
        )
        return set((await session.execute(query)).scalars())


@pytest.mark.postgres
async def test_every_page_is_read_from_the_index_where_the_last_one_ended(database: Database) -> None:
    """With the cursor in the index condition, a page costs its own rows, not every row before
    it (a cursor applied as a filter made page n walk n pages of the index)."""
    await insert_connections(database, due=300, later=20_000)
    async with database.engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.exec_driver_sql("VACUUM ANALYZE platform_connections")
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        statements.append((statement, parameters))

    now = utc_now()
    event.listen(database.engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with database.transaction() as session:
            first = await claim_due_page(
                session,
                due_by=now + timedelta(seconds=60),
                requested_before=now,
                after=None,
                limit=100,
                platforms=REFRESHABLE_PLATFORMS,
                now=now,
            )
            statements.clear()
            await claim_due_page(
                session,
                due_by=now + timedelta(seconds=60),
                requested_before=now,
                after=Cursor(first[-1].refresh_due_at, first[-1].id),
                limit=100,
                platforms=REFRESHABLE_PLATFORMS,
                now=now,
            )
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", capture)
    read, parameters = statements[0]
    assert "FOR UPDATE SKIP LOCKED" in read
    async with database.sessions() as session:
        driver: Any = (await (await session.connection()).get_raw_connection()).driver_connection
        plan = "\n".join(line[0] for line in await driver.fetch(f"EXPLAIN {read}", *parameters))
    index_scan = next(line for line in plan.splitlines() if "Index Scan" in line)
    assert SCAN_INDEX in index_scan, plan
    index_condition = plan.split("Index Cond:", 1)[1].splitlines()[0]
    assert "ROW(refresh_due_at, id) >" in index_condition, plan
    assert "Seq Scan" not in plan


@pytest.mark.postgres
async def test_a_page_is_marked_for_others_before_its_records_are_sent(database: Database) -> None:
    due = await insert_connections(database, due=6)
    settings = settings_for(database, page_size=3)
    seen_while_sending: list[set[uuid.UUID]] = []
    emitted: list[uuid.UUID] = []

    async def emit_many(events: list[TokenExpiring]) -> None:
        emitted.extend(event.user_id for event in events)
        # Another session looks while the page is on its way: all of it looks requested (a
        # second scan now would not request it again; the claim's row locks are gone).
        seen_while_sending.append(await marked(database, [event.user_id for event in events]))

    assert await scan_expiring(database, settings, emit_many) == 6
    assert sorted(map(sorted, seen_while_sending)) == sorted([sorted(due[0:3]), sorted(due[3:6])])
    assert emitted == due
    assert await marked(database, due) == set(due)


@pytest.mark.postgres
async def test_a_failed_page_stays_unmarked_and_the_pages_delivered_around_it_do_not(database: Database) -> None:
    """The next page is claimed and sent while the one before it is delivered: the second of
    three fails while the third is on its way. The first and third stay marked (every record
    of theirs was acknowledged), the second gets its marks back, and the next scan sends it
    alone."""
    due = await insert_connections(database, due=9)
    settings = settings_for(database, page_size=3)
    pages: list[list[uuid.UUID]] = []
    third_sent = asyncio.Event()

    async def second_fails(events: list[TokenExpiring]) -> None:
        pages.append([event.user_id for event in events])
        if len(pages) == 2:
            await third_sent.wait()  # fail only once the third page is on its way too
            raise KafkaTimeoutError()
        if len(pages) == 3:
            third_sent.set()

    with pytest.raises(KafkaTimeoutError):
        await asyncio.wait_for(scan_expiring(database, settings, second_fails), 30)
    assert pages == [due[0:3], due[3:6], due[6:9]]
    assert await marked(database, due) == set(due[0:3] + due[6:9])

    retried: list[uuid.UUID] = []

    async def emit_many(events: list[TokenExpiring]) -> None:
        retried.extend(event.user_id for event in events)

    assert await scan_expiring(database, settings, emit_many) == 3
    assert retried == due[3:6]


@pytest.mark.postgres
async def test_two_scans_at_once_never_request_a_connection_twice(database: Database) -> None:
    due = await insert_connections(database, due=400)
    settings = settings_for(database, page_size=25)
    emitted: dict[str, list[uuid.UUID]] = {"a": [], "b": []}

    def emitter(name: str) -> Any:
        async def emit_many(events: list[TokenExpiring]) -> None:
            emitted[name].extend(event.user_id for event in events)
            for _ in range(3):  # the other scan reads and sends meanwhile
                await asyncio.sleep(0.005)

        return emit_many

    counts = await asyncio.gather(
        scan_expiring(database, settings, emitter("a")), scan_expiring(database, settings, emitter("b"))
    )
    both = emitted["a"] + emitted["b"]
    assert sorted(both) == sorted(due)  # each due connection requested once, by one scan
    assert sum(counts) == len(due)
    assert emitted["a"] and emitted["b"]  # they did run at the same time


async def test_the_scan_on_the_embedded_sqlite_default(tmp_path: Path) -> None:
    """One writer at a time: a page is delivered (or given back) before the next one is claimed."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'scan.db'}")
    try:
        await upgrade_to_head(database)
        due = await insert_connections(database, due=7, later=3)
        settings = settings_for(database, page_size=2)
        emitted: list[uuid.UUID] = []

        async def emit_many(events: list[TokenExpiring]) -> None:
            emitted.extend(event.user_id for event in events)

        assert await asyncio.wait_for(scan_expiring(database, settings, emit_many), 30) == 7
        assert emitted == due
        assert await marked(database, due) == set(due)
        assert await scan_expiring(database, settings, emit_many) == 0
        async with database.sessions() as session:
            requested = await session.scalar(
                text("SELECT count(*) FROM platform_connections WHERE refresh_requested_at IS NOT NULL")
            )
        assert requested == 7
    finally:
        await database.dispose()
