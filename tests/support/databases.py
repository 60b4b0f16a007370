"""Databases of one's own on a Postgres server, migrated to the newest revision and dropped at the
end: the one helper of the suite's fixtures (tests/conftest.py), the benchmarks and the chaos runs."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from stream_app.db import Database
from stream_app.db.migrate import upgrade_to_head

# The suite's server (any database on it: each user creates its own).
POSTGRES_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+asyncpg://token_refresh:token_refresh@127.0.0.1:5432/token_refresh_test"
)


def database_url(server_url: str, name: str) -> str:
    """``server_url`` (any database on the server) with ``name`` as its database."""
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def administer(server_url: str, statement: str) -> None:
    """One statement outside a transaction (CREATE / DROP DATABASE cannot run inside one)."""
    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql(statement)
    finally:
        await engine.dispose()


async def create_database(server_url: str, name: str) -> str:
    """A new database ``name``, migrated to the newest revision; returns its URL. One whose
    migration failed is dropped again."""
    await administer(server_url, f'CREATE DATABASE "{name}"')
    url = database_url(server_url, name)
    database = Database(url)
    try:
        await upgrade_to_head(database)
    except BaseException:
        await database.dispose()
        await drop_database(server_url, name)
        raise
    await database.dispose()
    return url


async def drop_database(server_url: str, name: str) -> None:
    await administer(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def migrated_database(server_url: str, name: str) -> AsyncIterator[str]:
    """The URL of a new, migrated database ``name``, dropped (connections and all) on leaving."""
    try:
        yield await create_database(server_url, name)
    finally:
        await drop_database(server_url, name)
