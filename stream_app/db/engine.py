"""One AsyncEngine and one session factory per process, created at the composition root."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from stream_app.settings import Settings
from stream_app.slots import Slots

# A pooled connection returned less than this long ago is taken to be alive and handed out
# without a ping (HikariCP's "alive bypass window"): a busy pool pays no round trip per
# checkout. One idle longer, which a server restart or an idle timeout may have closed
# meanwhile, is pinged first, as pool_pre_ping would. A connection that dies within the window
# fails its first statement: the pool then discards every connection older than the failure,
# and TokenService reads once more.
PING_AFTER_IDLE_SECONDS = 1.0
_RETURNED_AT = "token_refresh_returned_at"


class Database:
    """The engine, its pool, and a gate in front of the pool.

    Sessions wait their turn at the gate (one slot per pooled connection) rather than at the
    pool, whose checkout times out: however many refreshes are in flight, they queue for a
    connection in order instead of failing with a pool timeout.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        max_overflow: int | None = None,
        pool_timeout: float = 30.0,
        ping_after_idle_seconds: float = PING_AFTER_IDLE_SECONDS,
    ) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        overflow = pool_size if max_overflow is None else max_overflow
        self.engine: AsyncEngine = create_async_engine(
            url,
            # A statement's error message never lists its bound values (ids, ciphertexts).
            hide_parameters=True,
            **self._engine_options(pool_size, overflow, pool_timeout),
        )
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            _ping_after_idle(self.engine, ping_after_idle_seconds)
        self._sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self._gate = Slots(pool_size + overflow)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        size, overflow = settings.pool_size()
        return cls(
            settings.database_url.get_secret_value(),
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
        }
        if self.url.get_driver_name() == "asyncpg":
            # Timestamps are stored as UTC without zone (the seed's types): pin the session zone
            # so NOW() in the seed's monitoring queries compares like with like.
            connect_args: dict[str, Any] = {"server_settings": {"timezone": "UTC"}}
            if _loopback_without_tls_choice(self.url):
                # asyncpg's default ("prefer") wraps even a loopback connection in TLS, which
                # protects nothing there and cost ~15% of a busy worker's CPU (benchmarks/).
                connect_args["ssl"] = False
            options["connect_args"] = connect_args
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


def _ping_after_idle(engine: AsyncEngine, idle_seconds: float) -> None:
    """Ping a pooled connection at checkout only when it has been idle ``idle_seconds`` or more
    (0: at every checkout); one the server has closed invalidates the pool and is replaced."""
    dialect = engine.dialect

    def returned(_dbapi_connection: Any, record: Any) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    def checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned_at = record.info.get(_RETURNED_AT)
        if returned_at is None or time.monotonic() - returned_at < idle_seconds:
            return  # just opened, or in use a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                raise InvalidatePoolError("the server closed a pooled connection") from error
            raise

    event.listen(engine.sync_engine, "checkin", returned)
    event.listen(engine.sync_engine, "checkout", checked_out)


_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def _loopback_without_tls_choice(url: URL) -> bool:
    """A database on this very host whose URL does not say how to use TLS (ssl or sslmode),
    nor the environment (libpq's PGSSLMODE, which asyncpg honours)."""
    return url.host in _LOOPBACK_HOSTS and not ({"ssl", "sslmode"} & set(url.query)) and not os.getenv("PGSSLMODE")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # The wait first: switching to WAL needs a moment alone with the file, and another process
    # (a second worker, the notifier) may be writing to it just then.
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
