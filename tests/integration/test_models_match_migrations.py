"""The schema the migrations build is the one the models describe (stream_app/db/models.py), on
PostgreSQL and on the embedded SQLite default: a table, column, index or constraint added to one
and not the other fails here (Alembic's autogenerate comparison)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection

from stream_app.db import Database
from stream_app.db.migrate import upgrade_to_head
from stream_app.db.models import Base


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


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def migrated(request: pytest.FixtureRequest) -> Database:
    database: Database = request.getfixturevalue(request.param)
    return database


def differences(connection: Connection) -> list[tuple[Any, ...]]:
    """Each change autogenerate would make to bring the database to the models, one per entry
    (a column's several changes come grouped in a list)."""
    changes: list[Any] = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    flat: list[tuple[Any, ...]] = []
    for change in changes:
        flat.extend(change if isinstance(change, list) else [change])
    return flat


async def test_the_migrated_schema_matches_the_models(migrated: Database) -> None:
    async with migrated.engine.connect() as connection:
        found = await connection.run_sync(differences)
    assert found == []
