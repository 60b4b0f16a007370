from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from stream_app.crypto import generate_key
from stream_app.sandbox import SandboxServer
from tests.support.databases import create_database, drop_database
from tests.support.infra import require_kafka, require_postgres


@pytest.fixture(scope="session")
def encryption_key() -> str:
    """A key made for this run only; no key is committed."""
    return generate_key()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return require_kafka()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of this test session's own, migrated to the newest revision, dropped at
    the end (so two suites on one server do not trample each other)."""
    with _migrated_database() as url:
        yield url


@pytest.fixture
def own_database_url() -> Iterator[str]:
    """A database of this one test's own, for tests that judge a whole table."""
    with _migrated_database() as url:
        yield url


@pytest.fixture(scope="module")
def module_database_url() -> Iterator[str]:
    """A database of this test module's own: for a worker whose outbox relay must meet only the
    module's own rows (the shared database holds other tests' unpublished events, under other
    topic names)."""
    with _migrated_database() as url:
        yield url


@contextlib.contextmanager
def _migrated_database() -> Iterator[str]:
    server_url = require_postgres()
    name = f"{make_url(server_url).database}_{uuid.uuid4().hex[:8]}"
    url = asyncio.run(create_database(server_url, name))
    try:
        yield url
    finally:
        asyncio.run(drop_database(server_url, name))


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their settings explicitly; nothing leaks in from the developer's shell."""
    for name in list(os.environ):
        platform_setting = name.endswith(("_CLIENT_ID", "_CLIENT_SECRET", "_TOKEN_URL", "_REVOCATION_URL"))
        if platform_setting or name in ("ENCRYPTION_KEY", "DATABASE_URL"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(os.path.dirname(__file__))
