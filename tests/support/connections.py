"""Seeding connections straight into the database, for tests of the engine and the API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import ConnectionCreated
from stream_app.crypto import TokenCipher
from stream_app.db import Database
from stream_app.decisions import RefreshPolicy
from stream_app.engine import RefreshEngine
from stream_app.ingest import record_connection
from stream_app.providers import ProviderClient
from stream_app.sandbox import SandboxServer
from stream_app.service import TokenService


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


def engine_for(
    service: TokenService,
    *,
    providers: type[ProviderClient] = ProviderClient,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> RefreshEngine:
    """A refresh engine on ``service``'s database, HTTP client and cipher, with a provider client
    class or a sleep of the test's own."""
    return RefreshEngine(
        service.settings,
        service.database,
        providers(service.http, service.settings),
        service.cipher,
        service.policy,
        hasher=service.hash_user_id,
        sleep=sleep,
    )
