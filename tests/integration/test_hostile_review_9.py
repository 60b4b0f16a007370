"""A hostile review of issue 9: a process out of order in a key deploy (lacking the new key)
must not hold back the processes that have it; the provider sandbox is recognised behind a path
prefix too. Each test failed on the code before its fix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from aiohttp import web

from stream_app.clock import utc_now
from stream_app.crypto import UnknownKeyError, generate_key, key_id
from stream_app.db.connections import get_connection
from stream_app.errors import ConfigurationError
from stream_app.sandbox import SandboxServer
from stream_app.sandbox.server import create_app
from stream_app.settings import collect_platform_variables, load_settings
from stream_app.startup_checks import refuse_foreign_credentials_at_the_sandbox
from tests.integration.conftest import ServiceFactory
from tests.support.connections import seed_connection


@pytest.mark.postgres
async def test_an_api_process_lacking_the_key_does_not_hold_back_the_refresh_of_a_due_token(
    make_service: ServiceFactory, sandbox: SandboxServer, encryption_key: str
) -> None:
    """An API process the deploy has not reached is asked for a token that is due: it cannot
    read the row, so its caller gets UnknownKeyError. It used to start an on-demand refresh
    that deferred the row (refresh_not_before and refresh_due_at a scan interval ahead), at
    every call: the workers that have the key then held the connection back as 'backing_off'
    while the API kept being asked, and its token expired."""
    new_key = generate_key()
    worker = make_service(encryption_key=new_key, retired_encryption_keys=encryption_key)
    user_id, _grant = await seed_connection(
        worker.database, worker.cipher, sandbox, "spotify", expires_in=timedelta(hours=2)
    )
    assert (await worker.engine.refresh(user_id, "spotify", trigger="manual")).outcome == "refreshed"
    # The token is due now (inside the refresh buffer), under the new key.
    async with worker.database.transaction() as session:
        row = await get_connection(session, user_id, "spotify")
        assert row is not None and (row.refresh_token or "").startswith(f"v2:{key_id(new_key)}:")
        row.token_expires_at = utc_now() + timedelta(seconds=90)
        row.refresh_due_at = utc_now() - timedelta(seconds=1)
    async with worker.database.sessions() as session:
        before = await get_connection(session, user_id, "spotify")
    assert before is not None

    api = make_service(token_cache_ttl_seconds=0)  # still on the old key alone
    for _ in range(3):
        with pytest.raises(UnknownKeyError):
            await api.get_valid_access_token(user_id, "spotify")

    async with worker.database.sessions() as session:
        after = await get_connection(session, user_id, "spotify")
    assert after is not None
    assert (after.refresh_due_at, after.refresh_not_before) == (before.refresh_due_at, before.refresh_not_before)
    # The scan of a worker with the key still refreshes it.
    assert (await worker.engine.refresh(user_id, "spotify", trigger="scheduled")).outcome == "refreshed"


@asynccontextmanager
async def _sandbox_under(prefix: str) -> AsyncIterator[str]:
    """The sandbox served under a path prefix, as a shared test environment's reverse proxy
    (or ingress) would: ``http://127.0.0.1:<port><prefix>/<platform>/token``."""
    root = web.Application()
    root.add_subapp(prefix, create_app())
    runner = web.AppRunner(root)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}{prefix}"
    finally:
        await runner.cleanup()


async def test_a_real_client_pointed_at_the_sandbox_behind_a_path_prefix_is_refused(encryption_key: str) -> None:
    """The start-up check asked only the token URL's origin for /_admin/health: a sandbox
    reached through a path prefix was taken for a provider, and a real client secret and real
    refresh tokens went to it."""
    real_looking = {"SPOTIFY_CLIENT_ID": "5f0c1e2d3b4a", "SPOTIFY_CLIENT_SECRET": "9a8b7c6d5e4f3a2b1c0d"}
    async with _sandbox_under("/oauth-sandbox") as base:
        variables = {"SPOTIFY_TOKEN_URL": f"{base}/spotify/token", **real_looking}
        settings = load_settings(encryption_key=encryption_key, **collect_platform_variables(variables))
        with pytest.raises(ConfigurationError) as caught:
            await refuse_foreign_credentials_at_the_sandbox(settings)
        assert str(caught.value).startswith("SPOTIFY_TOKEN_URL: is the provider sandbox")

        own = {"SPOTIFY_TOKEN_URL": f"{base}/spotify/token", "SPOTIFY_CLIENT_ID": "sandbox-spotify-id"}
        own["SPOTIFY_CLIENT_SECRET"] = "sandbox-spotify-secret"
        await refuse_foreign_credentials_at_the_sandbox(
            load_settings(encryption_key=encryption_key, **collect_platform_variables(own))
        )


async def test_the_sandbox_client_id_with_a_real_client_secret_is_refused(
    sandbox: SandboxServer, encryption_key: str
) -> None:
    """The check compared the client id only: with the sandbox's id and a real secret (the
    secret exported in the shell wins over compose.sandbox.env), the real secret went to the
    sandbox in clear at every refresh."""
    variables = {**sandbox.service_env(), "SPOTIFY_CLIENT_SECRET": "9a8b7c6d5e4f3a2b1c0d-real"}
    settings = load_settings(encryption_key=encryption_key, **collect_platform_variables(variables))
    with pytest.raises(ConfigurationError) as caught:
        await refuse_foreign_credentials_at_the_sandbox(settings)
    message = str(caught.value)
    assert message.startswith("SPOTIFY_TOKEN_URL: is the provider sandbox") and "-real" not in message
