"""Batches as arrays on PostgreSQL: one bind parameter per column whatever the number of rows.

A multi-row ``INSERT … VALUES (…), (…)`` built per batch is compiled afresh for every batch
(its shape depends on the row count) and was a third of a busy worker's CPU; ``INSERT …
SELECT … FROM unnest(:a, :b, …)`` is one statement, compiled and prepared once, and asyncpg
encodes the arrays in C.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, LargeBinary, String, Table, Text, Uuid, text
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncSession

# Column names and types come from the models, never from input: they are safe to write into SQL.
_SQL_TYPES: dict[type[Any], str] = {
    Uuid: "uuid",
    Integer: "integer",
    BigInteger: "bigint",
    Text: "text",
    String: "text",
    DateTime: "timestamp",
    LargeBinary: "bytea",
}


def array_type(table: Table, column: str) -> str:
    """The SQL array type of ``column``'s values, e.g. ``uuid[]``."""
    return f"{_SQL_TYPES[type(table.c[column].type)]}[]"


def arrays_of(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> dict[str, list[Any]]:
    """One list per column, one element per row (an enum as its value)."""
    return {name: [_plain(row[name]) for row in rows] for name in columns}


def unnest(table: Table, columns: Sequence[str]) -> str:
    """``unnest(CAST(:a AS t[]), …) AS new(a, …)``: the arrays of ``arrays_of`` as rows."""
    casts = ", ".join(f"CAST(:{name} AS {array_type(table, name)})" for name in columns)
    return f"unnest({casts}) AS new({', '.join(columns)})"


def with_defaults(table: Table, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with the model's Python-side defaults filled in, as an ORM insert would: a
    statement of our own gets no help from the ORM, and the table has no server defaults."""
    defaults = [column for column in table.c if column.default is not None and column.name not in rows[0]]
    if not defaults:
        return list(rows)
    filled = []
    for row in rows:
        extra = {}
        for column in defaults:
            default = column.default
            extra[column.name] = default.arg(None) if default.is_callable else default.arg  # type: ignore[union-attr]
        filled.append({**row, **extra})
    return filled


async def insert_from_arrays(
    session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]], tail: str = ""
) -> Result[Any]:
    """``INSERT INTO table (…) SELECT * FROM unnest(…)`` of ``rows`` (same keys each), then
    ``tail`` (``ON CONFLICT …``, ``RETURNING …``). PostgreSQL only."""
    complete = with_defaults(table, rows)
    columns = list(complete[0])
    statement = text(
        f"INSERT INTO {table.name} ({', '.join(columns)}) "  # noqa: S608 - names from the model
        f"SELECT {', '.join(columns)} FROM {unnest(table, columns)} {tail}"
    )
    return await session.execute(statement, arrays_of(complete, columns))


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value
