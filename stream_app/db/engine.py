"""One AsyncEngine and one session factory per process, created at the composition root."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from stream_app.settings import Settings


class Database:
    """The engine, its pool, and a gate in front of the pool.

    Sessions wait their turn at the gate (one slot per pooled connection) rather than at the
    pool, whose checkout times out: however many refreshes are in flight, they queue for a
    connection in order instead of failing with a pool timeout.
    """

    def __init__(
        self, url: str, *, pool_size: int = 10, max_overflow: int | None = None, pool_timeout: float = 30.0
    ) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        overflow = pool_size if max_overflow is None else max_overflow
        self.engine: AsyncEngine = create_async_engine(url, **self._engine_options(pool_size, overflow, pool_timeout))
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self._gate = asyncio.Semaphore(pool_size + overflow)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        size, overflow = settings.pool_size()
        return cls(
            settings.database_url,
            pool_size=size,
            max_overflow=overflow,
            pool_timeout=settings.database_pool_timeout_seconds,
        )

    def _engine_options(self, pool_size: int, max_overflow: int, pool_timeout: float) -> dict[str, Any]:
        if self.is_sqlite:
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            return {}
        options: dict[str, Any] = {
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            "pool_timeout": pool_timeout,
            "pool_pre_ping": True,
        }
        if self.url.get_driver_name() == "asyncpg":
            # Timestamps are stored as UTC without zone (the seed's types): pin the session zone
            # so NOW() in the seed's monitoring queries compares like with like.
            options["connect_args"] = {"server_settings": {"timezone": "UTC"}}
        return options

    @asynccontextmanager
    async def sessions(self) -> AsyncIterator[AsyncSession]:
        """A session, once a pooled connection is free for it."""
        async with self._gate, self._sessionmaker() as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    async def warm_up(self) -> None:
        """Open the pool's connections now rather than in the middle of the first burst."""
        if self.is_sqlite:
            return

        async def one() -> None:
            async with self.sessions() as session:
                await session.execute(text("SELECT 1"))

        await asyncio.gather(*(one() for _ in range(self.engine.pool.size())))  # type: ignore[attr-defined]

    async def dispose(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
