from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from stream_app.crypto import generate_key
from stream_app.db import Database
from stream_app.db.migrate import upgrade_to_head
from stream_app.db.models import Base
from stream_app.sandbox import SandboxServer
from tests.support.infra import require_kafka, require_postgres


@pytest.fixture(scope="session")
def encryption_key() -> str:
    """A key made for this run only; no key is committed."""
    return generate_key()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return require_kafka()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A freshly migrated test database (every table dropped, then the migrations applied)."""
    url = require_postgres()

    async def reset() -> None:
        database = Database(url)
        try:
            async with database.engine.begin() as connection:
                await connection.run_sync(Base.metadata.drop_all)
                await connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
            await upgrade_to_head(database)
        finally:
            await database.dispose()

    asyncio.run(reset())
    return url


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their settings explicitly; nothing leaks in from the developer's shell."""
    for name in list(os.environ):
        if name.endswith(("_CLIENT_ID", "_CLIENT_SECRET", "_TOKEN_URL")) or name in ("ENCRYPTION_KEY", "DATABASE_URL"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(os.path.dirname(__file__))
