"""Rotating ENCRYPTION_KEY: every row re-encrypted under the new key and bound to its row, in
batches, resumable, while refreshes go on; afterwards the retired key can be dropped."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import update

from stream_app.crypto import TokenCipher, generate_key
from stream_app.db import ConnectionRow
from stream_app.db.connections import get_connection
from stream_app.rotation import count_needing_rotation, rotate_keys
from stream_app.sandbox import SandboxServer
from tests.integration.conftest import ServiceFactory
from tests.support.connections import seed_connection

pytestmark = pytest.mark.postgres


async def test_rotation_rewrites_every_row_while_refreshes_go_on(
    make_service: ServiceFactory, sandbox: SandboxServer, own_database_url: str, encryption_key: str
) -> None:
    old = make_service(database_url=own_database_url)  # the suite's key is the one being retired
    seeded = [
        await seed_connection(old.database, old.cipher, sandbox, "gmail", expires_in=timedelta(minutes=m))
        for m in (2, 90, 90, 90, 90, 90)
    ]
    # One row as the original Node service left it: the seed format, no binding, no key id.
    legacy_user, legacy_grant = seeded[-1]
    async with old.database.transaction() as session:
        await session.execute(
            update(ConnectionRow)
            .where(ConnectionRow.user_id == legacy_user)
            .values(
                access_token=old.cipher.encrypt(legacy_grant["live_access_token"]),
                refresh_token=old.cipher.encrypt(legacy_grant["live_refresh_token"]),
            )
        )

    new_key = generate_key()
    rotated = make_service(
        database_url=own_database_url, encryption_key=new_key, retired_encryption_keys=encryption_key
    )
    assert await count_needing_rotation(rotated.database, rotated.cipher) >= len(seeded)
    progress: list[tuple[int, int]] = []
    report, refresh = await asyncio.gather(
        rotate_keys(rotated.database, rotated.cipher, batch_size=2, progress=lambda d, t: progress.append((d, t))),
        rotated.engine.refresh(seeded[0][0], "gmail", trigger="scheduled"),
    )

    assert refresh.outcome == "refreshed"
    assert report.remaining == 0 and report.unreadable == 0
    assert progress[0][0] == 0 and progress[-1][0] == progress[-1][1]
    only_new = TokenCipher(new_key)  # the retired key is gone now
    async with rotated.database.sessions() as session:
        for user_id, grant in seeded:
            row = await get_connection(session, user_id, "gmail")
            assert row is not None and row.access_token is not None
            assert row.access_token.startswith(f"v2:{only_new.current_key_id}:")
            truth = sandbox.state.grant(grant["grant_id"])
            assert only_new.decrypt_column(row, "access_token") == truth.live_access_token
            assert only_new.decrypt_column(row, "refresh_token") == truth.live_refresh_token

    # And the command does the same from the shell, with a progress bar, resumably.
    newest = generate_key()
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": own_database_url,
        "ENCRYPTION_KEY": newest,
        "RETIRED_ENCRYPTION_KEYS": new_key,
    }
    first = await asyncio.to_thread(_token_refresh, env, "rotate-keys", "--batch-size", "3")
    assert first.returncode == 0, first.stderr
    assert "Re-encrypting connections" in first.stderr and "0 still need a retired key" in first.stdout
    again = await asyncio.to_thread(_token_refresh, env, "rotate-keys")
    assert again.returncode == 0 and again.stdout.startswith("rotated 0,")
    assert await count_needing_rotation(rotated.database, TokenCipher(newest)) == 0

    # A row no configured key can read is reported, left alone, and fails the command.
    async with rotated.database.transaction() as session:
        await session.execute(
            update(ConnectionRow)
            .where(ConnectionRow.user_id == seeded[1][0])
            .values(access_token=TokenCipher(generate_key()).encrypt("sbx_at_lost"))
        )
    stuck = await asyncio.to_thread(_token_refresh, env, "rotate-keys")
    assert stuck.returncode == 1 and "unreadable 1; 1 still need a retired key" in stuck.stdout


def _token_refresh(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_app", *args], env=env, capture_output=True, text=True, timeout=120
    )
