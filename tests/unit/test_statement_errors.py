"""A failing statement's exception never carries its bound parameters: the engine is created with
``hide_parameters=True``, so the ids and ciphertexts of a statement do not reach an exception
message or a log line built from it (SQLAlchemy appends ``[parameters: ...]`` otherwise)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from stream_app.db import Database

MARKER = "bound-value-7d1e3c"


async def test_a_failing_statement_does_not_show_its_parameters(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'errors.db'}")
    try:
        with pytest.raises(DBAPIError) as raised:
            async with database.transaction() as session:
                await session.execute(text("INSERT INTO no_such_table (value) VALUES (:value)"), {"value": MARKER})
    finally:
        await database.dispose()

    assert "no_such_table" in str(raised.value)  # the statement is still there to debug
    assert MARKER not in str(raised.value)
    assert MARKER not in repr(raised.value)
