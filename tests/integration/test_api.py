"""The seed's Python API (contract §7) on real Postgres and the provider sandbox."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

import stream_app
from stream_app import TokenService
from stream_app.db.connections import get_connection
from stream_app.sandbox import SandboxServer
from tests.integration.conftest import ServiceFactory
from tests.support.connections import seed_connection

pytestmark = pytest.mark.postgres


@pytest.fixture
def service(make_service: ServiceFactory) -> Iterator[TokenService]:
    service = make_service(retry_base_delay_seconds=0.01)
    stream_app.configure(service)
    yield service
    stream_app.configure(None)


async def test_valid_token_is_returned_without_a_refresh(service: TokenService, sandbox: SandboxServer) -> None:
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(hours=1)
    )
    assert await stream_app.get_valid_access_token(str(user_id), "spotify") == grant["live_access_token"]
    assert sandbox.state.grant(grant["grant_id"]).refresh_count == 0


async def test_expiring_token_is_refreshed_on_demand(service: TokenService, sandbox: SandboxServer) -> None:
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, "discord", expires_in=timedelta(minutes=2)
    )
    token = await stream_app.get_valid_access_token(user_id, "discord")

    truth = sandbox.state.grant(grant["grant_id"]).snapshot()
    assert truth["refresh_count"] == 1
    assert token == truth["live_access_token"] != grant["live_access_token"]
    async with service.database.sessions() as session:
        row = await get_connection(session, user_id, "discord")
    assert row is not None and service.cipher.decrypt_column(row, "refresh_token") == truth["live_refresh_token"]


async def test_manual_refresh_returns_the_new_token(service: TokenService, sandbox: SandboxServer) -> None:
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, "youtube", expires_in=timedelta(hours=1)
    )
    result = await stream_app.refresh_platform_token(user_id, "youtube")

    assert result is not None
    assert result.access_token == sandbox.state.grant(grant["grant_id"]).live_access_token
    assert result.expires_in == grant["expires_in"]
    assert result.access_token not in repr(result)


async def test_missing_and_revoked_connections_give_none(service: TokenService, sandbox: SandboxServer) -> None:
    assert await stream_app.get_valid_access_token(uuid.uuid4(), "spotify") is None
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(minutes=1)
    )
    sandbox.state.revoke(grant["grant_id"])
    assert await stream_app.get_valid_access_token(user_id, "spotify") is None
    assert await stream_app.refresh_platform_token(user_id, "spotify") is None
    async with service.database.sessions() as session:
        row = await get_connection(session, user_id, "spotify")
    assert row is not None and row.status == "needs_reauth"


async def test_refresh_expiring_tokens_counts_outcomes(service: TokenService, sandbox: SandboxServer) -> None:
    due, _ = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(minutes=3)
    )
    await seed_connection(service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(days=1))
    dead, grant = await seed_connection(
        service.database, service.cipher, sandbox, "discord", expires_in=timedelta(minutes=3)
    )
    sandbox.state.revoke(grant["grant_id"])

    counts = await stream_app.refresh_expiring_tokens()

    # Earlier tests may have left due rows too; these two are certainly among the counts.
    assert counts["refreshed"] >= 1 and counts["needs_reauth"] >= 1
    assert await stream_app.refresh_expiring_tokens() == {"refreshed": 0, "needs_reauth": 0, "failed": 0, "skipped": 0}
    async with service.database.sessions() as session:
        assert (await get_connection(session, due, "spotify")).status == "connected"
        assert (await get_connection(session, dead, "discord")).status == "needs_reauth"


def test_crypto_helpers_use_the_configured_key(service: TokenService) -> None:
    ciphertext = stream_app.encrypt_token("sbx_plain_value")
    assert "sbx_plain_value" not in ciphertext
    assert service.cipher.decrypt(ciphertext) == "sbx_plain_value"
    assert stream_app.decrypt_token(service.cipher.encrypt("other")) == "other"
    user_hash = stream_app.hash_user_id("0b7c5c1e-31a5-4a8e-9d5b-0d1f7c1f9a11")
    assert len(user_hash) == 8 and user_hash == service.hash_user_id("0b7c5c1e-31a5-4a8e-9d5b-0d1f7c1f9a11")
