"""get_valid_access_token's cache of sealed rows, and its pool's pings, on real Postgres and the sandbox."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text, update
from sqlalchemy.ext.asyncio import create_async_engine

from stream_app import TokenService
from stream_app.clock import utc_now
from stream_app.db import Database
from stream_app.db.models import ConnectionRow
from stream_app.sandbox import SandboxServer
from stream_app.settings import load_settings
from stream_app.token_cache import SEALED_COLUMNS
from tests.integration.conftest import ServiceFactory
from tests.support.connections import seed_connection

pytestmark = pytest.mark.postgres

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_api.py"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def counted_reads(database: Database) -> Iterator[list[str]]:
    """Every statement on platform_connections that ``database`` sends while the block runs."""
    statements: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "platform_connections" in statement:
            statements.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", before)


@pytest.fixture
def service(make_service: ServiceFactory) -> TokenService:
    return make_service()


async def test_a_cached_fresh_token_is_served_without_sql(service: TokenService, sandbox: SandboxServer) -> None:
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(hours=1)
    )
    with counted_reads(service.database) as first:
        assert await service.get_valid_access_token(user_id, "spotify") == grant["live_access_token"]
    with counted_reads(service.database) as then:
        for _ in range(20):
            assert await service.get_valid_access_token(user_id, "spotify") == grant["live_access_token"]
    assert len(first) == 1
    assert then == []


async def test_with_ttl_zero_every_call_reads(make_service: ServiceFactory, sandbox: SandboxServer) -> None:
    service = make_service(token_cache_ttl_seconds=0)
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(hours=1)
    )
    with counted_reads(service.database) as statements:
        for _ in range(3):
            assert await service.get_valid_access_token(user_id, "spotify") == grant["live_access_token"]
    assert len(statements) == 3


async def test_concurrent_callers_of_a_cold_key_share_one_select(service: TokenService, sandbox: SandboxServer) -> None:
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, "discord", expires_in=timedelta(hours=1)
    )
    with counted_reads(service.database) as statements:
        tokens = await asyncio.gather(*(service.get_valid_access_token(user_id, "discord") for _ in range(100)))
    assert set(tokens) == {grant["live_access_token"]}
    assert len(statements) == 1


async def test_a_refresh_this_process_stores_replaces_the_cached_token(
    service: TokenService, sandbox: SandboxServer
) -> None:
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, "discord", expires_in=timedelta(hours=1)
    )
    assert await service.get_valid_access_token(user_id, "discord") == grant["live_access_token"]

    refreshed = await service.refresh_platform_token(user_id, "discord")

    assert refreshed is not None and refreshed.access_token != grant["live_access_token"]
    assert await service.get_valid_access_token(user_id, "discord") == refreshed.access_token


async def test_a_revocation_this_process_stores_is_seen_at_once(service: TokenService, sandbox: SandboxServer) -> None:
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(hours=1)
    )
    assert await service.get_valid_access_token(user_id, "spotify") == grant["live_access_token"]
    sandbox.state.revoke(grant["grant_id"])

    assert await service.refresh_platform_token(user_id, "spotify") is None  # needs_reauth, stored

    assert await service.get_valid_access_token(user_id, "spotify") is None


async def test_a_change_made_by_another_process_is_served_stale_for_at_most_the_ttl(
    service: TokenService, sandbox: SandboxServer
) -> None:
    clock = FakeClock()
    service.token_cache.clock = clock
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(hours=1)
    )
    assert await service.get_valid_access_token(user_id, "spotify") == grant["live_access_token"]
    async with service.database.transaction() as session:  # as a worker disconnecting the user would
        await session.execute(
            update(ConnectionRow)
            .where(ConnectionRow.user_id == user_id, ConnectionRow.platform == "spotify")
            .values(status="disconnected")
        )

    clock.now += service.settings.token_cache_ttl_seconds - 0.001
    assert await service.get_valid_access_token(user_id, "spotify") == grant["live_access_token"]
    clock.now += 0.001
    assert await service.get_valid_access_token(user_id, "spotify") is None


async def test_a_cached_token_that_has_come_due_goes_to_the_database(
    service: TokenService, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id, _ = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(hours=1)
    )
    await service.get_valid_access_token(user_id, "spotify")
    assert service.token_cache.get((user_id, "spotify")) is not None
    later = utc_now() + timedelta(minutes=58)  # within the 5-minute buffer of the expiry
    monkeypatch.setattr("stream_app.service.utc_now", lambda: later)

    with counted_reads(service.database) as statements:
        await service.get_valid_access_token(user_id, "spotify")

    assert statements, "a token due for refresh was answered from the cache"


async def test_a_due_token_is_refreshed_and_its_successor_cached(service: TokenService, sandbox: SandboxServer) -> None:
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, "discord", expires_in=timedelta(minutes=2)
    )
    token = await service.get_valid_access_token(user_id, "discord")

    truth = sandbox.state.grant(grant["grant_id"]).snapshot()
    assert truth["refresh_count"] == 1 and token == truth["live_access_token"] != grant["live_access_token"]
    await service.get_valid_access_token(user_id, "discord")  # reads the new row
    with counted_reads(service.database) as statements:
        assert await service.get_valid_access_token(user_id, "discord") == token
    assert statements == []
    assert sandbox.state.grant(grant["grant_id"]).refresh_count == 1


async def test_the_cache_holds_ciphertexts_never_a_plain_token(service: TokenService, sandbox: SandboxServer) -> None:
    plain: set[str] = set()
    for platform, expires_in in (("spotify", timedelta(hours=1)), ("discord", timedelta(minutes=2))):
        user_id, grant = await seed_connection(
            service.database, service.cipher, sandbox, platform, expires_in=expires_in
        )
        for _ in range(3):
            token = await service.get_valid_access_token(user_id, platform)
            assert token is not None
            plain.add(token)
        plain |= {grant["live_access_token"], grant["live_refresh_token"]}
        plain.add(sandbox.state.grant(grant["grant_id"]).live_refresh_token)

    rows = service.token_cache.sealed_rows()
    assert len(rows) == 2
    for row in rows:
        held = [str(getattr(row, column)) for column in SEALED_COLUMNS]
        assert not [value for value in held for token in plain if token in value]
        assert service.cipher.decrypt_column(row, "access_token") in plain  # a ciphertext of a served token


# The pool: pings after idle only, and a read on a connection the server dropped is retried.


@asynccontextmanager
async def service_on(
    database_url: str, encryption_key: str, tmp_path: Path, *, ping_after_idle_seconds: float
) -> AsyncIterator[TokenService]:
    """A service whose cache is off (every call reads) on a pool of its own."""
    settings = load_settings(
        encryption_key=encryption_key,
        database_url=database_url,
        token_cache_ttl_seconds=0,
        token_spool_dir=tmp_path / "spool",
    )
    database = Database(database_url, pool_size=2, ping_after_idle_seconds=ping_after_idle_seconds)
    async with TokenService(settings, database=database) as service:
        yield service


async def terminate_backends(database_url: str) -> int:
    """What a Postgres restart does to a pool: every other connection to the database is closed
    (waiting until each backend has gone)."""
    admin = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            result = await connection.execute(
                text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND usename = current_user AND backend_type = 'client backend'"
                )
            )
            return int(result.scalar_one())
    finally:
        await admin.dispose()


async def served_then_backends_terminated(
    service: TokenService, sandbox: SandboxServer, database_url: str
) -> tuple[uuid.UUID, str]:
    """A fresh connection whose token was served once (from a pooled connection, now idle),
    then every pooled connection closed by the server; returns its user id and token."""
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(hours=1)
    )
    assert await service.get_valid_access_token(user_id, "spotify") == grant["live_access_token"]
    assert await terminate_backends(database_url) >= 1
    return user_id, grant["live_access_token"]


@contextmanager
def disconnects_seen(database: Database) -> Iterator[list[BaseException]]:
    seen: list[BaseException] = []

    def handle_error(context: Any) -> None:
        if context.is_disconnect:
            seen.append(context.original_exception)

    event.listen(database.engine.sync_engine, "handle_error", handle_error)
    try:
        yield seen
    finally:
        event.remove(database.engine.sync_engine, "handle_error", handle_error)


async def test_a_read_on_a_connection_the_server_dropped_is_retried_once(
    own_database_url: str, encryption_key: str, tmp_path: Path, sandbox: SandboxServer
) -> None:
    async with service_on(own_database_url, encryption_key, tmp_path, ping_after_idle_seconds=3600) as service:
        user_id, token = await served_then_backends_terminated(service, sandbox, own_database_url)

        with disconnects_seen(service.database) as disconnects:
            tokens = [await service.get_valid_access_token(user_id, "spotify") for _ in range(3)]

        assert tokens == [token] * 3
        assert len(disconnects) == 1  # the first read met the dropped connection; none after it


async def test_an_idle_pooled_connection_is_pinged_and_replaced_before_a_statement_meets_it(
    own_database_url: str, encryption_key: str, tmp_path: Path, sandbox: SandboxServer
) -> None:
    async with service_on(own_database_url, encryption_key, tmp_path, ping_after_idle_seconds=0) as service:
        user_id, token = await served_then_backends_terminated(service, sandbox, own_database_url)

        with disconnects_seen(service.database) as disconnects:
            assert await service.get_valid_access_token(user_id, "spotify") == token

        assert disconnects == []


@pytest.mark.parametrize(("idle_seconds", "pinged"), [(3600, False), (0, True)])
async def test_a_connection_used_within_the_idle_window_is_not_pinged(
    own_database_url: str,
    encryption_key: str,
    tmp_path: Path,
    sandbox: SandboxServer,
    idle_seconds: float,
    pinged: bool,
) -> None:
    async with service_on(own_database_url, encryption_key, tmp_path, ping_after_idle_seconds=idle_seconds) as service:
        user_id, _ = await seed_connection(
            service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(hours=1)
        )
        dialect = service.database.engine.dialect
        pings: list[uuid.UUID] = []
        do_ping = dialect.do_ping

        def counted_ping(dbapi_connection: Any) -> bool:
            pings.append(user_id)
            return do_ping(dbapi_connection)

        dialect.do_ping = counted_ping  # type: ignore[method-assign]
        for _ in range(10):
            await service.get_valid_access_token(user_id, "spotify")

        assert (len(pings) >= 9) if pinged else (pings == [])


async def test_the_api_benchmark_measures_and_leaves_no_connection_behind(
    own_database_url: str, encryption_key: str
) -> None:
    spec = importlib.util.spec_from_file_location("bench_api", BENCHMARK)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up here
    try:
        spec.loader.exec_module(bench)
        result = await bench.measure_api(own_database_url, encryption_key, calls=40, concurrency=4, connections=4)
    finally:
        sys.modules.pop(spec.name, None)

    assert set(result) >= {"p50_ms", "p99_ms", "calls_per_second"}
    assert 0 < result["p50_ms"] <= result["p99_ms"] and result["calls_per_second"] > 0
    database = Database(own_database_url)
    try:
        async with database.sessions() as session:
            assert (await session.execute(text("SELECT count(*) FROM platform_connections"))).scalar_one() == 0
    finally:
        await database.dispose()
