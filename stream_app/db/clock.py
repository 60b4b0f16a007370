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
    # AT TIME ZONE 'UTC' keeps the value naive UTC whatever the session's time zone.
    return f"((now() AT TIME ZONE 'UTC') + make_interval(secs => {compiler.process(element.clauses, **kw)}))"


@compiles(db_now, "sqlite")
def _sqlite(element: db_now, compiler: Any, **kw: Any) -> str:
    # SQLAlchemy stores SQLite datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff': same shape, so they
    # compare as text; %f gives milliseconds, padded to microseconds.
    seconds = compiler.process(element.clauses, **kw)
    return f"(strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', {seconds})) || '000')"
