"""Taking over the Node (seed) service's database: ``token-refresh migrate --adopt``.

The seed created ``platform_connections`` itself (seed guide, "Database Schema"); this
service's migrations start by creating it (0001), so on such a database they fail. Adoption
checks that the table has the seed's shape, brings it to what migration 0001 leaves (this
service's five columns of 0001, the outbox table, the seed's two indexes if they are
missing), stamps revision 0001, and runs the later migrations: one transaction, so a failure
leaves the database as it was. The seed's columns and their data are not touched; the
later migrations only fill this service's new columns (0003's and 0008's schedules).

A database in any other state is refused with one line: a table of another shape, or one
that already has some of this service's columns or tables but no migration stamp (partly
migrated by hand or by a tool that stopped half-way): adoption does not guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from stream_app.errors import ConfigurationError

TABLE = "platform_connections"
# The seed's DDL, as PostgreSQL names its types.
_TIMESTAMP = "timestamp without time zone"
SEED_COLUMNS: dict[str, str] = {
    "id": "uuid",
    "user_id": "uuid",
    "platform": "text",
    "access_token": "text",
    "refresh_token": "text",
    "token_expires_at": _TIMESTAMP,
    "status": "text",
    "last_sync_status": "text",
    "last_sync_error": "text",
    "connected_at": _TIMESTAMP,
    "updated_at": _TIMESTAMP,
}
# What this service's migrations add to the table, and the tables they create: any of them on
# an unstamped database means a partial migration.
SERVICE_COLUMNS = (
    "scopes",
    "version",
    "refresh_requested_at",
    "last_refreshed_at",
    "consecutive_failures",
    "refresh_lease_owner",
    "refresh_lease_expires_at",
    "token_lifetime_seconds",
    "refresh_due_at",
    "refresh_not_before",
)
SERVICE_TABLES = ("outbox_events", "processed_events")
ADOPTED_REVISION = "0001"


class NotAdoptable(ConfigurationError):
    """The database is in a state adoption refuses to change (the message says which)."""


class DatabaseState(StrEnum):
    EMPTY = "empty"  # no platform_connections, no stamp: a plain migration creates everything
    MANAGED = "managed"  # stamped by this service's migrations
    UNMANAGED = "unmanaged"  # platform_connections without a stamp: the seed's, or a partial migration


@dataclass(frozen=True)
class TableColumn:
    name: str
    data_type: str  # as the server names it, lower case ("uuid", "timestamp without time zone")
    nullable: bool
    has_default: bool


@dataclass(frozen=True)
class TableShape:
    columns: Sequence[TableColumn]
    primary_key: Sequence[str]
    unique_sets: Sequence[frozenset[str]]  # column sets of unique constraints and unique indexes
    service_tables: Sequence[str]  # this service's tables present beside it


def database_state(connection: Connection) -> DatabaseState:
    inspector = inspect(connection)
    if inspector.has_table("alembic_version"):
        stamped = connection.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one()
        if stamped:
            return DatabaseState.MANAGED
    return DatabaseState.UNMANAGED if inspector.has_table(TABLE) else DatabaseState.EMPTY


def table_shape(connection: Connection) -> TableShape:
    inspector = inspect(connection)
    columns = [
        TableColumn(
            column["name"],
            column["type"].compile(dialect=connection.dialect).lower(),
            bool(column["nullable"]),
            column.get("default") is not None or bool(column.get("identity")) or bool(column.get("computed")),
        )
        for column in inspector.get_columns(TABLE)
    ]
    unique_sets = [frozenset(c["column_names"]) for c in inspector.get_unique_constraints(TABLE)]
    unique_sets += [
        frozenset(name for name in index["column_names"] if name is not None)
        for index in inspector.get_indexes(TABLE)
        if index["unique"] and not index.get("dialect_options", {}).get("postgresql_where")
    ]
    return TableShape(
        columns,
        inspector.get_pk_constraint(TABLE)["constrained_columns"],
        unique_sets,
        [name for name in SERVICE_TABLES if inspector.has_table(name)],
    )


def refusal(shape: TableShape) -> str | None:
    """Why adoption refuses a table of this shape (one line), or None: it is the seed's."""
    by_name = {column.name: column for column in shape.columns}
    ours = [name for name in SERVICE_COLUMNS if name in by_name] + list(shape.service_tables)
    if ours:
        return (
            f"{TABLE} already has this service's {', '.join(ours)} but the database has no migration stamp "
            "(alembic_version): a partial migration; nothing was changed (docs/takeover.md, 'Refusals')"
        )
    problems = []
    for name, data_type in SEED_COLUMNS.items():
        column = by_name.get(name)
        if column is None:
            problems.append(f"no column {name}")
        elif column.data_type != data_type:
            problems.append(f"{name} is {column.data_type}, not {data_type}")
    problems += [
        f"its column {column.name} is NOT NULL without a default (this service's inserts would fail)"
        for column in shape.columns
        if column.name not in SEED_COLUMNS and not column.nullable and not column.has_default
    ]
    if list(shape.primary_key) != ["id"]:
        problems.append("its primary key is not (id)")
    if frozenset({"user_id", "platform"}) not in shape.unique_sets:
        problems.append("no UNIQUE (user_id, platform)")
    if problems:
        return f"{TABLE} is not the Node service's table ({'; '.join(problems)}); nothing was changed"
    return None


def unmanaged_table_message(connection: Connection) -> str:
    """What a plain ``migrate`` says about an unstamped platform_connections (one line)."""
    why = refusal(table_shape(connection))
    if why is not None:
        return why
    return (
        f"{TABLE} is the Node service's table, not under this service's migrations: use `token-refresh migrate --adopt`"
    )


@dataclass(frozen=True)
class Adoption:
    rows: int
    kept_columns: Sequence[str]  # columns of the table neither the seed's nor this service's


def adopt_seed_table(connection: Connection, revision_0001: Any) -> Adoption:
    """Bring an unstamped, seed-shaped table to revision 0001's schema with that migration's own
    definitions (``revision_0001``: its module; the caller stamps it and upgrades, in the same
    transaction). Raises NotAdoptable when the table is not the seed's."""
    if connection.dialect.name != "postgresql":
        raise NotAdoptable(f"--adopt takes over the Node service's PostgreSQL database, not {connection.dialect.name}")
    shape = table_shape(connection)
    why = refusal(shape)
    if why is not None:
        raise NotAdoptable(why)
    operations = Operations(MigrationContext.configure(connection))
    for column in revision_0001.service_columns():
        operations.add_column(TABLE, column)
    _create_seed_indexes_if_missing(connection)
    revision_0001.create_outbox(operations)
    rows = connection.execute(sa.text(f"SELECT count(*) FROM {TABLE}")).scalar_one()  # noqa: S608 - constant
    kept = [column.name for column in shape.columns if column.name not in SEED_COLUMNS]
    return Adoption(rows, kept)


def _create_seed_indexes_if_missing(connection: Connection) -> None:
    # The seed's guide creates them; a deployment may have skipped them (its monitoring
    # queries and this service's model expect them).
    connection.execute(
        sa.text(
            "CREATE INDEX IF NOT EXISTS idx_platform_connections_status ON platform_connections (status) "
            "WHERE status IN ('connected', 'token_expired')"
        )
    )
    connection.execute(
        sa.text(
            "CREATE INDEX IF NOT EXISTS idx_platform_connections_expiry ON platform_connections (token_expires_at) "
            "WHERE token_expires_at IS NOT NULL"
        )
    )
