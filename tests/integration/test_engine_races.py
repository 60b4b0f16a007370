"""Races the engine must lose gracefully: a reconnect during a refresh, a stalled lease holder."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from schemas import ConnectionCreated
from stream_app import TokenService
from stream_app.clock import utc_now
from stream_app.db import ConnectionRow
from stream_app.db.connections import get_connection, update_fenced
from stream_app.db.leases import acquire_lease
from stream_app.ingest import record_connection
from stream_app.sandbox import SandboxServer
from tests.support.connections import seed_connection

pytestmark = pytest.mark.postgres


async def test_invalid_grant_after_a_reconnect_is_a_lost_race_not_a_revocation(
    service: TokenService, sandbox: SandboxServer
) -> None:
    user_id, old = await seed_connection(service.database, service.cipher, sandbox, "x", expires_in=timedelta(hours=1))
    sandbox.state.revoke(old["grant_id"])  # the user re-authorised: the old family is gone
    new = sandbox.create_grant("x")
    sandbox.state.latency = 1.0
    refresh = asyncio.create_task(service.engine.refresh(user_id, "x", trigger="manual"))
    await asyncio.sleep(0.3)
    await record_connection(
        service.database,
        service.cipher,
        ConnectionCreated(
            user_id=user_id,
            platform="x",
            access_token=service.cipher.encrypt(new["live_access_token"]),
            refresh_token=service.cipher.encrypt(new["live_refresh_token"]),
            token_expires_at=datetime.now(UTC) + timedelta(hours=2),
        ),
        service.policy,
    )
    result = await refresh

    assert (result.outcome, result.reason) == ("skipped", "lost_race")
    async with service.database.sessions() as session:
        row = await get_connection(session, user_id, "x")
    assert row is not None and row.status == "connected"
    assert service.cipher.decrypt_column(row, "refresh_token") == new["live_refresh_token"]


async def test_a_holder_that_stalled_past_its_lease_cannot_overwrite(
    service: TokenService, sandbox: SandboxServer
) -> None:
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(minutes=1)
    )
    async with service.database.sessions() as session:
        row = await get_connection(session, user_id, "spotify")
    assert row is not None
    async with service.database.transaction() as session:
        stale = await acquire_lease(session, row.id, "stalled-holder", ttl=30)
    assert stale is not None
    # Another process may not refresh while the lease is live ...
    async with service.database.transaction() as session:
        assert await acquire_lease(session, row.id, "other", ttl=0) is None
    # ... but once it has lapsed the engine takes over and refreshes.
    async with service.database.transaction() as session:
        await session.execute(
            update(ConnectionRow)
            .where(ConnectionRow.id == row.id)
            .values(refresh_lease_expires_at=utc_now() - timedelta(seconds=1))
        )
    result = await service.engine.refresh(user_id, "spotify", trigger="scheduled")
    assert result.outcome == "refreshed"

    async with service.database.transaction() as session:
        assert not await update_fenced(session, stale, "stalled-holder", {"last_sync_error": "late write"})
    async with service.database.sessions() as session:
        after = await get_connection(session, user_id, "spotify")
    assert after is not None and after.last_sync_error is None
    assert (
        service.cipher.decrypt_column(after, "access_token") == sandbox.state.grant(grant["grant_id"]).live_access_token
    )


async def test_waiters_in_another_process_share_the_result(service: TokenService, sandbox: SandboxServer) -> None:
    other = TokenService(service.settings)
    try:
        user_id, grant = await seed_connection(
            service.database, service.cipher, sandbox, "slack", expires_in=timedelta(minutes=1)
        )
        sandbox.state.latency = 0.5
        first, second = await asyncio.gather(
            service.refresh_platform_token(user_id, "slack"), other.refresh_platform_token(user_id, "slack")
        )
    finally:
        await other.aclose()
    truth = sandbox.state.grant(grant["grant_id"])
    assert truth.refresh_count == 1
    assert first is not None and second is not None
    assert first.access_token == second.access_token == truth.live_access_token
