"""Hundreds of refreshes in flight share a pool of a few connections: sessions queue for a
connection at the gate instead of failing with the pool's checkout timeout."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from stream_app.crypto import generate_key
from stream_app.db import Database
from stream_app.settings import load_settings

pytestmark = pytest.mark.postgres


async def test_more_transactions_than_connections_all_complete(postgres_url: str) -> None:
    database = Database(postgres_url, pool_size=2, max_overflow=0, pool_timeout=0.2)

    async def one() -> int:
        async with database.transaction() as session:
            await session.execute(text("SELECT pg_sleep(0.05)"))
            return 1

    try:
        done = await asyncio.gather(*(one() for _ in range(60)))  # 1.5 s of work through 2 connections
    finally:
        await database.dispose()
    assert sum(done) == 60


@pytest.mark.parametrize(("in_flight", "pool"), [(500, (20, 10)), (100, (5, 2)), (250, (10, 5)), (10_000, (20, 10))])
def test_the_pool_is_sized_from_the_refreshes_in_flight(in_flight: int, pool: tuple[int, int]) -> None:
    settings = load_settings(encryption_key=generate_key(), max_refreshes_in_flight=in_flight)
    assert settings.pool_size() == pool
    explicit = load_settings(encryption_key=generate_key(), database_pool_size=7, database_max_overflow=0)
    assert explicit.pool_size() == (7, 0)


async def _uses_tls(url: str) -> bool:
    database = Database(url)
    try:
        async with database.sessions() as session:
            return bool(await session.scalar(text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")))
    finally:
        await database.dispose()


async def test_a_loopback_database_is_reached_without_tls_unless_the_url_asks_for_it(postgres_url: str) -> None:
    assert "127.0.0.1" in postgres_url or "localhost" in postgres_url
    # The project's Postgres (Debian's cluster) offers TLS, which asyncpg alone would prefer.
    assert await _uses_tls(f"{postgres_url}?ssl=require")  # the URL's own choice is kept

    assert not await _uses_tls(postgres_url)


async def test_a_loopback_database_keeps_the_tls_mode_the_environment_asks_for(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libpq's PGSSLMODE (which asyncpg honours) is the operator's choice as much as the URL's."""
    monkeypatch.setenv("PGSSLMODE", "require")

    assert await _uses_tls(postgres_url)
