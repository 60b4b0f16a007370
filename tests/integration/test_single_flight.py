"""One refresh per connection at a time, across the worker and every on-demand caller."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from schemas import TokenExpiring
from stream_app import TokenService
from stream_app.clock import utc_now
from stream_app.db import ConnectionRow, Database
from stream_app.settings import load_settings
from tests.integration.conftest import Stack
from tests.support.kafka import produce

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def _expire_soon(database_url: str, user_id: uuid.UUID, platform: str) -> datetime:
    expires_at = utc_now() + timedelta(minutes=2)
    database = Database(database_url)
    try:
        async with database.transaction() as session:
            await session.execute(
                update(ConnectionRow)
                .where(ConnectionRow.user_id == user_id, ConnectionRow.platform == platform)
                .values(token_expires_at=expires_at, refresh_due_at=expires_at - timedelta(minutes=5))
            )
    finally:
        await database.dispose()
    return expires_at


async def test_fifty_callers_and_the_scheduler_share_one_refresh(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in stack.worker.env.items():
        if name.startswith("TOPIC_") or name in stack.sandbox.service_env():
            monkeypatch.setenv(name, value)
    settings = load_settings(
        encryption_key=stack.worker.env["ENCRYPTION_KEY"],
        database_url=stack.database_url,
        refresh_lease_seconds=30,
        # Every caller waits for the one refresh, however loaded the machine: past its deadline a
        # caller is given the stored token, still valid (by design), and the test could not tell.
        on_demand_deadline_seconds=20,
    )
    # Five "API processes" of the product, ten concurrent callers each, plus the worker.
    services = [TokenService(settings) for _ in range(5)]
    state = stack.sandbox.state
    try:
        async with stack.reader("token.refreshed") as reader:
            user_id, grant = await stack.connect("discord", expires_in=timedelta(hours=6))  # single-use rotation
            await asyncio.sleep(2)  # stored by the worker, not due
            assert state.grant(grant["grant_id"]).refresh_count == 0
            expires_at = await _expire_soon(stack.database_url, user_id, "discord")

            state.latency = 1.0  # keep the one refresh in flight while everybody piles in
            request = TokenExpiring(
                user_id=user_id, platform="discord", token_expires_at=expires_at.replace(tzinfo=UTC)
            )
            scheduled = produce(
                stack.bootstrap, stack.topics["token.expiring"], [(request.key.encode(), request.to_bytes())]
            )
            calls = [service.get_valid_access_token(user_id, "discord") for service in services for _ in range(10)]
            tokens, _ = await asyncio.gather(asyncio.gather(*calls), scheduled)
            await reader.drain(3)  # the scheduled event has been handled too
    finally:
        state.latency = 0.0
        for service in services:
            await service.aclose()

    truth = state.grant(grant["grant_id"])
    assert truth.refresh_count == 1
    assert truth.max_in_flight == 1
    assert set(tokens) == {truth.live_access_token}
    refreshed = [r for r in reader.records if str(user_id).encode() in (r[2] or b"")]
    assert len(refreshed) == 1
    row = await stack.row(user_id, "discord")
    assert row is not None and stack.cipher.decrypt_column(row, "refresh_token") == truth.live_refresh_token


async def test_duplicate_and_replayed_refresh_requests_have_one_effect(stack: Stack) -> None:
    async with stack.reader("token.refreshed") as reader:
        user_id, grant = await stack.connect("x", expires_in=timedelta(hours=6))  # single use, family kill
        await asyncio.sleep(2)
        expires_at = await _expire_soon(stack.database_url, user_id, "x")
        request = TokenExpiring(user_id=user_id, platform="x", token_expires_at=expires_at.replace(tzinfo=UTC))
        again = TokenExpiring(user_id=user_id, platform="x", token_expires_at=expires_at.replace(tzinfo=UTC))
        # A producer retry (same event), a second timer tick (another event), a late replay.
        records = [(request.key.encode(), request.to_bytes())] * 2 + [(again.key.encode(), again.to_bytes())]
        await produce(stack.bootstrap, stack.topics["token.expiring"], records)
        await reader.wait_for(lambda _t, e: e.get("user_id") == str(user_id), timeout=60)
        await produce(stack.bootstrap, stack.topics["token.expiring"], [(request.key.encode(), request.to_bytes())])
        await reader.drain(4)

    truth = stack.sandbox.state.grant(grant["grant_id"])
    assert truth.refresh_count == 1 and not truth.revoked
    assert len([r for r in reader.records if str(user_id).encode() in (r[2] or b"")]) == 1
    row = await stack.row(user_id, "x")
    assert row is not None and row.status == "connected"
    assert stack.cipher.decrypt_column(row, "refresh_token") == truth.live_refresh_token
