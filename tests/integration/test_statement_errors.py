"""On Postgres too (asyncpg), a failing statement's exception does not carry its bound
parameters (the engine's ``hide_parameters=True``)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from stream_app.db import Database

pytestmark = pytest.mark.postgres

MARKER = "bound-value-5be90a"


async def test_a_failing_statement_does_not_show_its_parameters(postgres_url: str) -> None:
    database = Database(postgres_url)
    try:
        with pytest.raises(DBAPIError) as raised:
            async with database.transaction() as session:
                await session.execute(
                    text("UPDATE platform_connections SET access_token = :token WHERE id = :id AND no_such_column"),
                    {"token": MARKER, "id": uuid.uuid4()},
                )
    finally:
        await database.dispose()

    assert "no_such_column" in str(raised.value)
    assert MARKER not in str(raised.value)
    assert MARKER not in repr(raised.value)
