"""The Postgres schema keeps the seed's contract: columns, CHECK, UNIQUE, indexes, queries."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from stream_app.clock import utc_now
from stream_app.db import Database

pytestmark = pytest.mark.postgres

# The seed guide's three monitoring queries, verbatim.
MONITORING_QUERIES = [
    """SELECT platform, COUNT(*)
FROM platform_connections
WHERE token_expires_at < NOW() + INTERVAL '1 hour'
GROUP BY platform;""",
    """SELECT platform, COUNT(*)
FROM platform_connections
WHERE status = 'needs_reauth'
GROUP BY platform;""",
    """SELECT platform, last_sync_error, COUNT(*)
FROM platform_connections
WHERE last_sync_status = 'error'
GROUP BY platform, last_sync_error;""",
]


@pytest.fixture
async def database(postgres_url: str) -> AsyncIterator[Database]:
    database = Database(postgres_url)
    yield database
    await database.dispose()


async def _insert(database: Database, **values: object) -> None:
    row = {
        "user_id": uuid.uuid4(),
        "platform": "spotify",
        "token_expires_at": utc_now(),
        "status": "connected",
        "last_sync_status": "pending",
        "last_sync_error": None,
    } | values
    async with database.transaction() as session:
        await session.execute(
            text(
                "INSERT INTO platform_connections"
                " (user_id, platform, token_expires_at, status, last_sync_status, last_sync_error)"
                " VALUES (:user_id, :platform, :token_expires_at, :status, :last_sync_status, :last_sync_error)"
            ),
            row,
        )


async def test_seed_monitoring_queries_run_unchanged(database: Database) -> None:
    marker = f"test-{uuid.uuid4().hex[:8]}"
    await _insert(database, platform=marker, token_expires_at=utc_now() + timedelta(minutes=30))
    await _insert(
        database,
        platform=marker,
        token_expires_at=utc_now() + timedelta(hours=3),
        status="needs_reauth",
        last_sync_status="error",
        last_sync_error="invalid_grant: Refresh token revoked",
    )
    async with database.sessions() as session:
        expiring, reauth, failed = [
            [tuple(row) for row in (await session.execute(text(query))).all()] for query in MONITORING_QUERIES
        ]
    assert (marker, 1) in expiring
    assert (marker, 1) in reauth
    assert (marker, "invalid_grant: Refresh token revoked", 1) in failed


async def test_seed_columns_defaults_and_constraints(database: Database) -> None:
    user_id = uuid.uuid4()
    async with database.transaction() as session:
        await session.execute(
            text("INSERT INTO platform_connections (user_id, platform) VALUES (:u, 'spotify')"), {"u": user_id}
        )
    async with database.sessions() as session:
        row = (
            await session.execute(
                text(
                    "SELECT id, status, last_sync_status, connected_at, updated_at"
                    " FROM platform_connections WHERE user_id = :u"
                ),
                {"u": user_id},
            )
        ).one()
    assert isinstance(row.id, uuid.UUID)  # gen_random_uuid() default
    assert (row.status, row.last_sync_status) == ("connected", "pending")
    assert row.connected_at is not None and row.updated_at is not None
    with pytest.raises(IntegrityError):
        await _insert(database, user_id=user_id)  # UNIQUE(user_id, platform)
    with pytest.raises(IntegrityError):
        await _insert(database, status="expired")  # CHECK on status


async def test_seed_partial_indexes_exist(database: Database) -> None:
    async with database.sessions() as session:
        rows = (
            await session.execute(
                text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'platform_connections'")
            )
        ).all()
    definitions = dict(rows)
    assert (
        "WHERE (status = ANY (ARRAY['connected'::text, 'token_expired'::text]))"
        in definitions["idx_platform_connections_status"]
    )
    assert "WHERE (token_expires_at IS NOT NULL)" in definitions["idx_platform_connections_expiry"]
