"""Refreshes in flight together share their transactions (claims and outcomes go in batches),
and each is still fenced on its own row."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from stream_app.db import ConnectionRow, OutboxRow
from stream_app.db.bulk import update_fenced_many
from stream_app.db.connections import get_connection
from stream_app.sandbox import SandboxServer
from tests.integration.conftest import ServiceFactory
from tests.support.connections import seed_connection

pytestmark = pytest.mark.postgres

DUE = timedelta(minutes=2)
CONNECTIONS = 30


async def test_refreshes_in_flight_together_commit_in_shared_transactions(
    make_service: ServiceFactory, sandbox: SandboxServer
) -> None:
    service = make_service()
    users = [
        (await seed_connection(service.database, service.cipher, sandbox, "spotify", expires_in=DUE))[0]
        for _ in range(CONNECTIONS)
    ]
    commits = 0

    def count(*_: Any) -> None:
        nonlocal commits
        commits += 1

    event.listen(service.database.engine.sync_engine, "commit", count)
    try:
        results = await asyncio.gather(
            *(service.engine.refresh(user, "spotify", trigger="scheduled") for user in users)
        )
    finally:
        event.remove(service.database.engine.sync_engine, "commit", count)

    assert [r.outcome for r in results] == ["refreshed"] * CONNECTIONS
    # One claim and one outcome per refresh, each in its own transaction, would be 60 commits.
    assert commits <= CONNECTIONS // 2, commits
    async with service.database.sessions() as session:
        keys = [f"{user}:spotify".encode() for user in users]  # the database is shared with other tests
        outbox = (await session.execute(select(OutboxRow).where(OutboxRow.key.in_(keys)))).scalars().all()
        for user in users:
            row = await get_connection(session, user, "spotify")
            assert row is not None and row.last_sync_status == "success" and row.refresh_lease_owner is None
    assert len(outbox) == CONNECTIONS  # one event each, written with its row


async def test_a_batch_applies_only_the_writes_whose_fence_still_holds(
    make_service: ServiceFactory, sandbox: SandboxServer
) -> None:
    service = make_service()
    users = [
        (await seed_connection(service.database, service.cipher, sandbox, "spotify", expires_in=DUE))[0]
        for _ in range(3)
    ]
    async with service.database.transaction() as session:
        for user in users:
            row = await get_connection(session, user, "spotify")
            assert row is not None
            row.refresh_lease_owner = "us"
    async with service.database.sessions() as session:
        rows = [await get_connection(session, user, "spotify") for user in users]
    first, stolen, changed = (row for row in rows if row is not None)
    async with service.database.transaction() as session:
        (await session.get_one(ConnectionRow, stolen.id)).refresh_lease_owner = "someone else"
        (await session.get_one(ConnectionRow, changed.id)).version += 1

    async with service.database.transaction() as session:
        applied = await update_fenced_many(
            session,
            [
                (first, "us", {"last_sync_error": "written", "token_expires_at": None}),
                (stolen, "us", {"last_sync_error": "written", "token_expires_at": None}),
                (changed, "us", {"last_sync_error": "written", "token_expires_at": None}),
            ],
        )

    assert applied == [True, False, False]
    async with service.database.sessions() as session:
        after = {row.id: row for row in (await session.execute(select(ConnectionRow))).scalars()}
    assert after[first.id].last_sync_error == "written" and after[first.id].token_expires_at is None
    assert after[first.id].refresh_lease_owner is None and after[first.id].version == first.version + 1
    assert after[stolen.id].last_sync_error is None and after[stolen.id].refresh_lease_owner == "someone else"
    assert after[changed.id].last_sync_error is None and after[changed.id].token_expires_at is not None
