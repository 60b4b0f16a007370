"""The database's clock, for times that several processes compare (refresh leases).

Each process's own clock may drift; every lease is taken, renewed and judged against the
one clock they share. Values are naive UTC, like every timestamp column here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import DateTime, Float, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement


class db_now(FunctionElement[Any]):  # named like the SQL function it stands for
    """The database's current time, naive UTC, plus ``seconds`` (default 0)."""

    type = DateTime()
    inherit_cache = True

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__(literal(float(seconds), Float()))


@compiles(db_now, "postgresql")
def _postgresql(element: db_now, compiler: Any, **kw: Any) -> str:
    # clock_timestamp(), not now(): now() is when the transaction began, and a statement that
    # waited on a lock (a lease renewal queued behind a long table lock) would set or judge a
    # lease by a moment long gone. AT TIME ZONE 'UTC' keeps the value naive UTC.
    seconds = compiler.process(element.clauses, **kw)
    return f"((clock_timestamp() AT TIME ZONE 'UTC') + make_interval(secs => {seconds}))"


@compiles(db_now, "sqlite")
def _sqlite(element: db_now, compiler: Any, **kw: Any) -> str:
    # SQLAlchemy stores SQLite datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff': same shape, so they
    # compare as text; %f gives milliseconds, padded to microseconds.
    seconds = compiler.process(element.clauses, **kw)
    return f"(strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', {seconds})) || '000')"
