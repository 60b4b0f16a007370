"""Outbox retention: events published before the cutoff are deleted, in chunks each committed on
its own; recent published events and unpublished events of any age stay. On PostgreSQL and on
the embedded SQLite default."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import event, insert, select, text

from agents.scheduler import prune_published_outbox
from stream_app.clock import utc_now
from stream_app.db import Database
from stream_app.db.migrate import upgrade_to_head
from stream_app.db.models import OutboxRow
from stream_app.db.outbox_retention import delete_published_chunk, prune_published

NOW = utc_now()
CUTOFF = NOW - timedelta(hours=24)


@pytest.fixture
async def postgres(own_database_url: str) -> AsyncIterator[Database]:
    database = Database(own_database_url)
    yield database
    await database.dispose()


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'token_refresh.db'}")
    await upgrade_to_head(database)
    yield database
    await database.dispose()


BOTH = [pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"]


@pytest.fixture(params=BOTH)
def database(request: pytest.FixtureRequest) -> Database:
    db: Database = request.getfixturevalue(request.param)
    return db


async def add(database: Database, count: int, *, created: datetime, published: datetime | None) -> set[int]:
    """``count`` outbox rows; their ids."""
    rows = [
        {
            "event_id": uuid.uuid4(),
            "topic": "token.refreshed",
            "key": b"k",
            "payload": b"{}",
            "created_at": created,
            "published_at": published,
        }
        for _ in range(count)
    ]
    async with database.transaction() as session:
        return set((await session.execute(insert(OutboxRow).returning(OutboxRow.id), rows)).scalars())


async def ids(database: Database) -> set[int]:
    async with database.sessions() as session:
        return set((await session.execute(select(OutboxRow.id))).scalars())


async def test_old_published_events_go_recent_and_unpublished_ones_stay(database: Database) -> None:
    old_published = await add(database, 3, created=NOW - timedelta(days=3), published=NOW - timedelta(days=3))
    at_the_cutoff = await add(database, 1, created=CUTOFF, published=CUTOFF)
    recent_published = await add(database, 2, created=NOW - timedelta(hours=1), published=NOW - timedelta(hours=1))
    unpublished_ancient = await add(database, 2, created=NOW - timedelta(days=400), published=None)
    unpublished_recent = await add(database, 2, created=NOW, published=None)

    deleted = await prune_published(database, CUTOFF)

    assert deleted == 3
    remaining = await ids(database)
    assert remaining == at_the_cutoff | recent_published | unpublished_ancient | unpublished_recent
    assert old_published.isdisjoint(remaining)
    assert await prune_published(database, CUTOFF) == 0


async def test_more_than_one_chunk_is_deleted_each_committed_before_the_next(database: Database) -> None:
    old = await add(database, 25, created=NOW - timedelta(days=2), published=NOW - timedelta(days=2))
    kept = await add(database, 3, created=NOW - timedelta(days=2), published=None)
    commits: list[str] = []
    chunks: list[tuple[int, int]] = []  # (rows deleted, commits so far) as each chunk is reported

    def on_commit(_connection: object) -> None:
        commits.append("commit")

    engine = database.engine.sync_engine
    event.listen(engine, "commit", on_commit)
    try:
        total = await prune_published(
            database, CUTOFF, chunk_rows=10, on_chunk=lambda n: chunks.append((n, len(commits)))
        )
    finally:
        event.remove(engine, "commit", on_commit)

    assert total == 25
    # One transaction per chunk, each committed before the chunk is reported and the next begins;
    # the short third chunk says nothing is left.
    assert chunks == [(10, 1), (10, 2), (5, 3)]
    assert len(commits) == 3
    remaining = await ids(database)
    assert remaining == kept and old.isdisjoint(remaining)


async def chunk_statement(database: Database) -> tuple[str, tuple[object, ...]]:
    """The SQL and parameters ``delete_published_chunk`` sends (its deletion rolled back)."""
    statements: list[tuple[str, tuple[object, ...]]] = []
    engine = database.engine.sync_engine

    def capture(_c: object, _cursor: object, statement: str, parameters: tuple[object, ...], *_: object) -> None:
        statements.append((statement, parameters))

    async with database.sessions() as session, session.begin():
        event.listen(engine, "before_cursor_execute", capture)
        try:
            await delete_published_chunk(session, CUTOFF, 10)
        finally:
            event.remove(engine, "before_cursor_execute", capture)
        await session.rollback()
    return statements[-1]


@pytest.mark.postgres
async def test_a_chunk_is_found_through_the_published_at_index(postgres: Database) -> None:
    await add(postgres, 50, created=NOW - timedelta(days=2), published=NOW - timedelta(days=2))
    statement, parameters = await chunk_statement(postgres)

    raw = await postgres.engine.raw_connection()
    try:
        connection = raw.driver_connection
        assert connection is not None
        async with connection.transaction():
            # A tiny table is cheapest read whole; this asks what the index makes possible.
            await connection.execute("SET LOCAL enable_seqscan = off")
            plan = "\n".join(row[0] for row in await connection.fetch("EXPLAIN " + statement, *parameters))
    finally:
        raw.close()
    # Without the partial index only a walk of the whole primary key could serve the predicate.
    assert "Index Cond: ((published_at IS NOT NULL) AND (published_at < " in plan, plan
    assert "idx_outbox_events_published_at" in plan, plan
    assert "Index Cond: (id = ANY ($" in plan, plan  # the doomed ids are probed in the key, not hash-joined


async def test_the_sqlite_default_finds_a_chunk_through_the_index(sqlite: Database) -> None:
    statement, parameters = await chunk_statement(sqlite)

    async with sqlite.engine.connect() as connection:
        plan = (await connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)).all()

    steps = [row[-1] for row in plan]
    assert any(
        step.startswith("SEARCH outbox_events USING") and "INDEX idx_outbox_events_published_at" in step
        for step in steps
    ), steps
    assert "SEARCH outbox_events USING INTEGER PRIMARY KEY (rowid=?)" in steps, steps


def pruned_total() -> float:
    return REGISTRY.get_sample_value("token_refresh_outbox_pruned_total") or 0.0


async def test_housekeeping_counts_logs_and_survives_a_failure(
    sqlite: Database, caplog: pytest.LogCaptureFixture
) -> None:
    await add(sqlite, 12, created=NOW - timedelta(days=2), published=NOW - timedelta(days=2))
    await add(sqlite, 2, created=NOW - timedelta(hours=1), published=NOW - timedelta(hours=1))
    before = pruned_total()
    caplog.set_level(logging.INFO, logger="agents.scheduler")

    assert await prune_published_outbox(sqlite, retention_hours=24) == 12

    assert pruned_total() - before == 12
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(said) == 1 and said[0].startswith("Pruned 12 outbox event(s) published before "), said

    caplog.clear()
    assert await prune_published_outbox(sqlite, retention_hours=24) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]  # nothing pruned: nothing said

    async with sqlite.transaction() as session:
        await session.execute(text("DROP TABLE outbox_events"))
    assert await prune_published_outbox(sqlite, retention_hours=24) == 0  # logged, not raised
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failures] == ["Pruning published outbox events failed after 0 row(s)"]
    assert failures[0].exc_info is not None
