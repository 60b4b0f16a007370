"""A hostile review of issue 9's key deploy: a process out of order (lacking the new key) must
not hold back the processes that have it. Failed on the code before its fix."""

from __future__ import annotations

from datetime import timedelta

import pytest

from stream_app.clock import utc_now
from stream_app.crypto import UnknownKeyError, generate_key, key_id
from stream_app.db.connections import get_connection
from stream_app.sandbox import SandboxServer
from tests.integration.conftest import ServiceFactory
from tests.support.connections import seed_connection

pytestmark = pytest.mark.postgres


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
