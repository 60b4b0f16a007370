"""The table the paths work on: emptied between runs, seeded with due connections, counted."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import insert

from schemas import ConnectionCreated
from stream_app.clock import utc_now
from stream_app.crypto import TokenBinding, TokenCipher
from stream_app.db import Database
from stream_app.db.models import ConnectionRow

from .environment import PLATFORM, Grant

# Tokens that expire well inside the default 300 s refresh buffer: each connection is due at once.
EXPIRES_IN = timedelta(seconds=120)
LIFETIME_SECONDS = 3600
CHUNK = 1000


@dataclass(frozen=True)
class Connection:
    user_id: uuid.UUID
    grant: Grant

    @property
    def key(self) -> str:
        return f"{self.user_id}:{PLATFORM}"


def connections_for(grants: list[Grant]) -> list[Connection]:
    return [Connection(uuid.uuid4(), grant) for grant in grants]


def dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://")


async def empty(database_url: str) -> None:
    connection = await asyncpg.connect(dsn(database_url))
    try:
        await connection.execute("TRUNCATE platform_connections, outbox_events, processed_events")
    finally:
        await connection.close()


async def seed_due(database_url: str, cipher: TokenCipher, connections: list[Connection]) -> None:
    """Rows as the service stores them (tokens bound to row and column, as stream_app.ingest's
    ``bound_tokens`` does), all due now: a wave the next scan requests at once."""
    now = utc_now()
    database = Database(database_url)
    try:
        for start in range(0, len(connections), CHUNK):
            values = [_row(cipher, connection, now) for connection in connections[start : start + CHUNK]]
            async with database.transaction() as session:
                await session.execute(insert(ConnectionRow), values)
    finally:
        await database.dispose()


def _row(cipher: TokenCipher, connection: Connection, now: datetime) -> dict[str, object]:
    user_id = connection.user_id
    return {
        "id": uuid.uuid4(),
        "user_id": user_id,
        "platform": PLATFORM,
        "access_token": cipher.encrypt(connection.grant.access_token, TokenBinding(user_id, PLATFORM, "access_token")),
        "refresh_token": cipher.encrypt(
            connection.grant.refresh_token, TokenBinding(user_id, PLATFORM, "refresh_token")
        ),
        "token_expires_at": now + EXPIRES_IN,
        "status": "connected",
        "last_sync_status": "pending",
        "connected_at": now,
        "updated_at": now,
        "version": 0,
        "consecutive_failures": 0,
        "token_lifetime_seconds": LIFETIME_SECONDS,
        "refresh_due_at": now - timedelta(seconds=1),
    }


def created_event(cipher: TokenCipher, connection: Connection) -> ConnectionCreated:
    """A `connection.created` as a producer sends it: tokens in the seed's ciphertext format
    under the run's key, expiring inside the refresh buffer (due at once)."""
    return ConnectionCreated(
        user_id=connection.user_id,
        platform=PLATFORM,
        access_token=cipher.encrypt(connection.grant.access_token),
        refresh_token=cipher.encrypt(connection.grant.refresh_token),
        token_expires_at=datetime.now(UTC) + EXPIRES_IN,
    )


async def refreshed_since(database_url: str, since: datetime) -> int:
    """Connections whose row says they were refreshed at or after ``since`` (naive UTC)."""
    connection = await asyncpg.connect(dsn(database_url))
    try:
        return int(
            await connection.fetchval("SELECT count(*) FROM platform_connections WHERE last_refreshed_at >= $1", since)
        )
    finally:
        await connection.close()
