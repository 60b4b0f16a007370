"""platform_connections leaves room on its pages (fillfactor 85, migration 0007, and the model's
own DDL), so the scan's mark, which changes no indexed column, is a HOT update: no new entry
in any of the table's five indexes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Table, insert, text
from sqlalchemy.schema import CreateTable

from stream_app.catalog import REFRESHABLE_PLATFORMS
from stream_app.clock import utc_now
from stream_app.db import ConnectionRow, Database
from stream_app.db.migrate import MIGRATIONS_DIR, current_revision, head_revision, upgrade_to_head
from stream_app.db.scan import claim_due_page

ROWS = 3000


@pytest.fixture
async def database(own_database_url: str) -> AsyncIterator[Database]:
    database = Database(own_database_url)
    yield database
    await database.dispose()


async def reloptions(database: Database) -> list[str] | None:
    async with database.sessions() as session:
        options: list[str] | None = await session.scalar(
            text("SELECT reloptions FROM pg_class WHERE oid = 'platform_connections'::regclass")
        )
        return options


@pytest.mark.postgres
async def test_the_migrations_and_the_model_leave_room_on_each_page(database: Database) -> None:
    assert await reloptions(database) == ["fillfactor=85"]
    table = cast(Table, ConnectionRow.__table__)
    ddl = str(CreateTable(table).compile(dialect=database.engine.dialect))
    assert ddl.rstrip().endswith("WITH (fillfactor = 85)")

    def downgrade_to_0006(connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        command.downgrade(config, "0006")

    async with database.engine.begin() as connection:
        await connection.run_sync(downgrade_to_0006)
    assert await reloptions(database) is None
    await upgrade_to_head(database)
    assert await reloptions(database) == ["fillfactor=85"]


@pytest.mark.postgres
async def test_the_scans_mark_is_a_hot_update_on_pages_filled_since(database: Database) -> None:
    """Pages filled row by row, then every row marked in one claim (so no old version is dead
    yet to make room): at fillfactor 100 the pages are full and not one mark is HOT (each goes
    to another page and into every index); at 85 about a fifth are (563 of 3,000 here). Once
    vacuum or page pruning has removed the old versions, the next marks find room again."""
    now = utc_now()
    rows: list[dict[str, Any]] = [
        {
            "id": uuid.uuid4(),
            "user_id": uuid.uuid4(),
            "platform": "spotify",
            "access_token": "sealed-access-token-placeholder",
            "refresh_token": "sealed-refresh-token-placeholder",
            "token_expires_at": now + timedelta(minutes=5),
            "status": "connected",
            "version": 0,
            "consecutive_failures": 0,
            "refresh_due_at": now - timedelta(seconds=1),
        }
        for _ in range(ROWS)
    ]
    async with database.transaction() as session:
        await session.execute(insert(ConnectionRow), rows)
    async with database.transaction() as session:
        claimed = await claim_due_page(
            session,
            due_by=now + timedelta(seconds=60),
            requested_before=now,
            after=None,
            limit=ROWS,
            platforms=REFRESHABLE_PLATFORMS,
            now=now,
        )
        updated, hot = (
            await session.execute(
                text(
                    "SELECT pg_stat_get_xact_tuples_updated(oid), pg_stat_get_xact_tuples_hot_updated(oid)"
                    " FROM pg_class WHERE oid = 'platform_connections'::regclass"
                )
            )
        ).one()
    assert len(claimed) == updated == ROWS
    assert hot >= ROWS // 10, f"{hot} of {updated} marks were HOT updates"


async def test_the_migration_is_a_no_op_on_sqlite(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'fillfactor.db'}")
    try:
        await upgrade_to_head(database)
        assert await current_revision(database) == head_revision()
    finally:
        await database.dispose()
