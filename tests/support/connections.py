"""Seeding connections straight into the database, for tests of the engine and the API."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import ConnectionCreated
from stream_app.crypto import TokenCipher
from stream_app.db import Database
from stream_app.decisions import RefreshPolicy
from stream_app.ingest import record_connection
from stream_app.sandbox import SandboxServer


async def seed_connection(
    database: Database,
    cipher: TokenCipher,
    sandbox: SandboxServer,
    platform: str,
    *,
    expires_in: timedelta,
    **grant_options: Any,
) -> tuple[uuid.UUID, dict[str, Any]]:
    """A new user connected to ``platform`` with a fresh sandbox grant; returns (user_id, grant)."""
    grant = sandbox.create_grant(platform, **grant_options)
    event = ConnectionCreated(
        user_id=uuid.uuid4(),
        platform=platform,
        access_token=cipher.encrypt(grant["live_access_token"]),
        refresh_token=cipher.encrypt(grant["live_refresh_token"]),
        token_expires_at=datetime.now(UTC) + expires_in,
    )
    await record_connection(database, cipher, event, RefreshPolicy())
    return event.user_id, grant
