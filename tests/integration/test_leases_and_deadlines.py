"""The lease outlives whatever a refresh waits for (a provider slot, retries, a slow answer),
is judged by the database's clock, and never lets a caller wait past its deadline."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from stream_app import TokenService
from stream_app.clock import utc_now
from stream_app.crypto import generate_key
from stream_app.db import ConnectionRow
from stream_app.db.clock import db_now
from stream_app.db.connections import get_connection
from stream_app.db.leases import acquire_lease
from stream_app.errors import TokenUnavailableError
from stream_app.sandbox import SandboxServer
from tests.integration.conftest import ServiceFactory
from tests.support.connections import seed_connection

pytestmark = pytest.mark.postgres


async def test_a_lease_is_set_and_judged_by_the_database_clock(service: TokenService, sandbox: SandboxServer) -> None:
    user_id, _ = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(hours=1)
    )
    async with service.database.sessions() as session:
        row = await get_connection(session, user_id, "spotify")
    assert row is not None
    async with service.database.transaction() as session:
        held = await acquire_lease(session, row.id, "holder", ttl=30)
        now = await session.scalar(select(db_now()))
    assert held is not None and held.refresh_lease_expires_at is not None and now is not None
    assert abs((held.refresh_lease_expires_at - now).total_seconds() - 30) < 1


async def test_a_lease_outlives_a_long_wait_for_the_provider_slot(
    make_service: ServiceFactory, sandbox: SandboxServer
) -> None:
    """One call at a time to the provider, 1.5 s each, five refreshes queued: the last one waits
    ~6 s for its slot, longer than its 6 s lease. Renewed in the background, no lease lapses."""
    service = make_service(platform_max_concurrency=1, refresh_lease_seconds=6, http_timeout_seconds=2)
    seeded = [
        await seed_connection(service.database, service.cipher, sandbox, "gmail", expires_in=timedelta(minutes=2))
        for _ in range(5)
    ]
    sandbox.state.latency = 1.5
    try:
        refreshing = asyncio.gather(*(service.engine.refresh(u, "gmail", trigger="scheduled") for u, _ in seeded))
        lapsed = 0
        while not refreshing.done():
            async with service.database.sessions() as session:
                lapsed += len(
                    (
                        await session.scalars(
                            select(ConnectionRow.id).where(
                                ConnectionRow.user_id.in_([user for user, _ in seeded]),
                                ConnectionRow.refresh_lease_owner.is_not(None),
                                ConnectionRow.refresh_lease_expires_at < db_now(),
                            )
                        )
                    ).all()
                )
            await asyncio.sleep(0.2)
        results = await refreshing
    finally:
        sandbox.state.latency = 0.0
    assert [r.outcome for r in results] == ["refreshed"] * 5
    assert lapsed == 0
    assert all(sandbox.state.grant(g["grant_id"]).refresh_count == 1 for _, g in seeded)  # type: ignore[union-attr]


def test_a_lease_shorter_than_three_provider_calls_stops_start_up() -> None:
    from stream_app.errors import ConfigurationError
    from stream_app.settings import load_settings

    with pytest.raises(ConfigurationError) as caught:
        load_settings(encryption_key=generate_key(), refresh_lease_seconds=20, http_timeout_seconds=10)
    message = str(caught.value)
    assert message.startswith("REFRESH_LEASE_SECONDS:") and "HTTP_TIMEOUT_SECONDS" in message
    assert "\n" not in message


async def hold_lease_elsewhere(service: TokenService, user_id: uuid.UUID, platform: str) -> None:
    """Another process is refreshing this connection (and will be for a while)."""
    async with service.database.transaction() as session:
        await session.execute(
            update(ConnectionRow)
            .where(ConnectionRow.user_id == user_id, ConnectionRow.platform == platform)
            .values(refresh_lease_owner="elsewhere", refresh_lease_expires_at=db_now(300))
        )


async def test_a_still_valid_token_is_returned_at_the_deadline(
    make_service: ServiceFactory, sandbox: SandboxServer
) -> None:
    service = make_service(on_demand_deadline_seconds=1)
    # Valid for 150 s more, inside the 300 s buffer: due, and someone else holds the refresh.
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(seconds=150)
    )
    await hold_lease_elsewhere(service, user_id, "spotify")
    started = asyncio.get_running_loop().time()
    token = await service.get_valid_access_token(user_id, "spotify")
    took = asyncio.get_running_loop().time() - started
    assert token == grant["live_access_token"]
    assert 0.9 <= took < 2.5


async def test_a_throttled_refresh_returns_the_still_valid_token_at_once(
    make_service: ServiceFactory, sandbox: SandboxServer
) -> None:
    service = make_service(on_demand_deadline_seconds=2)
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(seconds=150)
    )
    sandbox.state.add_fault({"platform": "spotify", "mode": "rate_limit", "retry_after": 120})
    started = asyncio.get_running_loop().time()
    assert await service.get_valid_access_token(user_id, "spotify") == grant["live_access_token"]
    assert asyncio.get_running_loop().time() - started < 2.5


async def test_an_expired_token_whose_refresh_cannot_finish_raises_a_clear_error(
    make_service: ServiceFactory, sandbox: SandboxServer
) -> None:
    service = make_service(on_demand_deadline_seconds=1)
    user_id, _ = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(seconds=-5)
    )
    await hold_lease_elsewhere(service, user_id, "spotify")
    started = asyncio.get_running_loop().time()
    with pytest.raises(TokenUnavailableError, match="did not complete within 1s"):
        await service.get_valid_access_token(user_id, "spotify")
    assert asyncio.get_running_loop().time() - started < 2.5


def run_script(body: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-X", "dev", "-c", textwrap.dedent(body)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def api_env(service: TokenService, sandbox: SandboxServer) -> dict[str, str]:
    import os

    return {
        **os.environ,
        **sandbox.service_env(),
        "ENCRYPTION_KEY": service.settings.encryption_key.get_secret_value(),
        "DATABASE_URL": service.settings.database_url.get_secret_value(),
    }


async def test_the_api_works_from_one_event_loop_after_another(
    service: TokenService, sandbox: SandboxServer, tmp_path: Path
) -> None:
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(hours=1)
    )
    script = f"""
        import asyncio, stream_app
        first = asyncio.run(stream_app.get_valid_access_token({str(user_id)!r}, "spotify"))
        second = asyncio.run(stream_app.get_valid_access_token({str(user_id)!r}, "spotify"))
        print("same" if first == second and first else "different")
    """
    result = await asyncio.to_thread(run_script, script, api_env(service, sandbox), tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("same")
    assert grant["live_access_token"] not in result.stdout + result.stderr


async def test_the_async_with_form_closes_its_pools(
    service: TokenService, sandbox: SandboxServer, tmp_path: Path
) -> None:
    user_id, _ = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(seconds=60)
    )
    script = f"""
        import asyncio, stream_app
        async def main():
            async with stream_app.open_service() as tokens:
                token = await tokens.get_valid_access_token({str(user_id)!r}, "spotify")  # refreshes
                print("token" if token else "none")
        asyncio.run(main())
    """
    result = await asyncio.to_thread(run_script, script, api_env(service, sandbox), tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "token"
    assert "Unclosed" not in result.stderr and "ResourceWarning" not in result.stderr, result.stderr[-2000:]
    async with service.database.sessions() as session:
        row = await get_connection(session, user_id, "spotify")
    assert row is not None and row.token_expires_at is not None and row.token_expires_at > utc_now()


async def test_the_lease_of_a_process_that_died_on_this_host_is_taken_over_at_once(
    service: TokenService, sandbox: SandboxServer
) -> None:
    """A worker killed (kill -9, OOM) while refreshing leaves its lease behind; its successor on
    the same host does not wait for it to lapse."""
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(minutes=2)
    )
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    async with service.database.transaction() as session:
        await session.execute(
            update(ConnectionRow)
            .where(ConnectionRow.user_id == user_id)
            .values(
                refresh_lease_owner=f"{socket.gethostname()}:{dead.pid}:0badf00d", refresh_lease_expires_at=db_now(300)
            )
        )
    result = await service.engine.refresh(user_id, "spotify", trigger="scheduled", wait_for_others=0)
    assert result.outcome == "refreshed"
    assert sandbox.state.grant(grant["grant_id"]).refresh_count == 1  # type: ignore[union-attr]


async def test_the_lease_of_a_live_process_or_another_host_is_left_alone(
    service: TokenService, sandbox: SandboxServer
) -> None:
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(minutes=2)
    )
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        for holder in (f"{socket.gethostname()}:{alive.pid}:1", f"another-host:{alive.pid + 1}:2", "garbage"):
            async with service.database.transaction() as session:
                await session.execute(
                    update(ConnectionRow)
                    .where(ConnectionRow.user_id == user_id)
                    .values(refresh_lease_owner=holder, refresh_lease_expires_at=db_now(300))
                )
            result = await service.engine.refresh(user_id, "spotify", trigger="scheduled", wait_for_others=0)
            assert (result.outcome, result.reason) == ("skipped", "refreshing_elsewhere"), holder
    finally:
        alive.kill()
        alive.wait()
    assert sandbox.state.grant(grant["grant_id"]).refresh_count == 0  # type: ignore[union-attr]


async def test_the_database_clock_is_the_moment_a_statement_runs_not_its_transactions_start(
    service: TokenService,
) -> None:
    """A lease renewal queued behind a long lock must extend the lease from when it runs."""
    async with service.database.transaction() as session:
        began = await session.scalar(select(db_now()))
        await session.execute(text("SELECT pg_sleep(1.2)"))
        later = await session.scalar(select(db_now()))
    assert began is not None and later is not None
    assert (later - began).total_seconds() >= 1.1
