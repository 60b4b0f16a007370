"""Apply the Alembic migrations (``token-refresh migrate``), and adopt the Node service's
database (``--adopt``, stream_app/db/adoption.py)."""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from stream_app.db.adoption import (
    ADOPTED_REVISION,
    Adoption,
    DatabaseState,
    adopt_seed_table,
    database_state,
    unmanaged_table_message,
)
from stream_app.db.engine import Database
from stream_app.errors import ConfigurationError

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class UnmanagedDatabase(ConfigurationError):
    """platform_connections exists but no migration of this service made it (the message says
    whether ``--adopt`` takes it over)."""


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


async def upgrade_to_head(database: Database) -> None:
    """Migrate to the newest revision; a table this service's migrations did not create is
    refused (UnmanagedDatabase), never met with a failing CREATE TABLE."""
    await upgrade_to(database, "head")


async def upgrade_to(database: Database, revision: str) -> None:
    """``upgrade_to_head`` up to ``revision`` only (benchmarks compare schemas)."""
    async with database.engine.begin() as connection:
        await connection.run_sync(_upgrade, revision)


def _upgrade(connection: Connection, revision: str) -> None:
    if database_state(connection) is DatabaseState.UNMANAGED:
        raise UnmanagedDatabase(unmanaged_table_message(connection))
    command.upgrade(_alembic_config(connection), revision)


async def adopt_and_upgrade(database: Database) -> Adoption | None:
    """Adopt the seed's table if the database has one and no stamp (NotAdoptable if it is not
    the seed's), then migrate to the newest revision, all in one transaction. Returns the
    adoption, or None when there was nothing to adopt (an empty or a migrated database: then
    it is a plain migration)."""
    async with database.engine.begin() as connection:
        return await connection.run_sync(_adopt_and_upgrade)


def _adopt_and_upgrade(connection: Connection) -> Adoption | None:
    adoption = None
    if database_state(connection) is DatabaseState.UNMANAGED:
        revision_0001 = ScriptDirectory.from_config(_alembic_config()).get_revision(ADOPTED_REVISION).module
        adoption = adopt_seed_table(connection, revision_0001)
        command.stamp(_alembic_config(connection), ADOPTED_REVISION)
    command.upgrade(_alembic_config(connection), "head")
    return adoption


async def current_revision(database: Database) -> str | None:
    async with database.engine.connect() as connection:
        return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())


@functools.cache
def head_revision() -> str | None:
    """The newest revision shipped with this code (read once: /readyz asks at every probe)."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()
