"""A rolling key deploy: processes on different keys share one table. A row under a key id a
process has not configured is a configuration problem (the refresh is deferred, the status
kept, the key id counted and named), never tampering; a row failing authentication under a
configured key still is. Rotation names the key ids it cannot read, and tells when no row is
left in the seed format, after which REFUSE_UNBOUND_CIPHERTEXTS refuses copied seed ciphertexts."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, update

from stream_app.crypto import TokenCipher, UnknownKeyError, generate_key, key_id
from stream_app.db import ConnectionRow, Database
from stream_app.db.connections import get_connection
from stream_app.db.models import OutboxRow
from stream_app.rotation import rotate_keys
from stream_app.sandbox import SandboxServer
from stream_app.service import TokenService
from tests.integration.conftest import ServiceFactory
from tests.support.connections import seed_connection

pytestmark = pytest.mark.postgres


def _refreshes(sandbox: SandboxServer, grant: dict[str, Any] | None) -> int:
    assert grant is not None
    truth = sandbox.state.grant(grant["grant_id"])
    assert truth is not None
    return truth.refresh_count


async def _row(database: Database, user_id: uuid.UUID) -> ConnectionRow:
    async with database.sessions() as session:
        row = await get_connection(session, user_id, "spotify")
    assert row is not None
    return row


async def _outbox_topics(database: Database, user_id: uuid.UUID) -> list[str]:
    async with database.sessions() as session:
        rows = (await session.scalars(select(OutboxRow).where(OutboxRow.key == f"{user_id}:spotify".encode()))).all()
    return [row.topic for row in rows]


async def _under_new_key(
    make_service: ServiceFactory, sandbox: SandboxServer, old_key: str, *, expires_in: timedelta
) -> tuple[TokenService, str, uuid.UUID, dict[str, str]]:
    """A connection refreshed by a worker already on the new key (the old one retired there)."""
    new_key = generate_key()
    new = make_service(encryption_key=new_key, retired_encryption_keys=old_key)
    user_id, grant = await seed_connection(new.database, new.cipher, sandbox, "spotify", expires_in=expires_in)
    assert (await new.engine.refresh(user_id, "spotify", trigger="manual")).outcome == "refreshed"
    row = await _row(new.database, user_id)
    assert row.refresh_token is not None and row.refresh_token.startswith(f"v2:{key_id(new_key)}:")
    return new, new_key, user_id, grant


def _unknown_key_count(kid: str) -> float:
    return REGISTRY.get_sample_value("token_refresh_unknown_key_total", {"key_id": kid}) or 0.0


async def test_an_old_key_engine_defers_a_row_under_the_new_key_and_keeps_its_status(
    make_service: ServiceFactory, sandbox: SandboxServer, encryption_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    old = make_service()  # still on the suite's key alone: the deploy has not reached it
    _new, new_key, user_id, grant = await _under_new_key(
        make_service, sandbox, encryption_key, expires_in=timedelta(minutes=2)
    )
    async with old.database.transaction() as session:  # due again: the old engine's scan would ask
        await session.execute(
            update(ConnectionRow)
            .where(ConnectionRow.user_id == user_id)
            .values(token_expires_at=ConnectionRow.token_expires_at - timedelta(hours=3))
        )
    before = await _row(old.database, user_id)
    counted = _unknown_key_count(key_id(new_key))
    refreshes = _refreshes(sandbox, grant)

    result = await old.engine.refresh(user_id, "spotify", trigger="scheduled")

    assert (result.outcome, result.reason, result.event) == ("deferred", "unknown_key", None)
    after = await _row(old.database, user_id)
    assert (after.status, after.last_sync_status, after.last_sync_error) == (
        before.status,
        before.last_sync_status,
        before.last_sync_error,
    )
    assert after.refresh_token == before.refresh_token and after.consecutive_failures == 0
    # Not pushed back (that would hold it from the processes that have the key); the lease given
    # back and the request mark cleared, so the scan asks again.
    assert (after.refresh_due_at, after.refresh_not_before) == (before.refresh_due_at, before.refresh_not_before)
    assert after.refresh_lease_owner is None and after.refresh_requested_at is None
    assert "token.refresh_failed" not in await _outbox_topics(old.database, user_id)
    assert _refreshes(sandbox, grant) == refreshes  # the provider was not called
    assert _unknown_key_count(key_id(new_key)) == counted + 1
    assert old.cipher.unknown_key_ids() == [key_id(new_key)]
    assert any(key_id(new_key) in r.getMessage() and r.levelname in ("WARNING", "ERROR") for r in caplog.records)

    # A process the deploy has reached (the new key configured, as current or retired) refreshes
    # it on the scan's next request, not held by the old one.
    caught_up = make_service(retired_encryption_keys=new_key)
    assert (await caught_up.engine.refresh(user_id, "spotify", trigger="scheduled")).outcome == "refreshed"
    assert (await _row(caught_up.database, user_id)).status == "connected"


async def test_get_valid_access_token_raises_unknown_key_and_writes_nothing(
    make_service: ServiceFactory, sandbox: SandboxServer, encryption_key: str
) -> None:
    old = make_service(token_cache_ttl_seconds=0)
    _new, new_key, user_id, _grant = await _under_new_key(
        make_service, sandbox, encryption_key, expires_in=timedelta(hours=2)
    )
    before = await _row(old.database, user_id)

    with pytest.raises(UnknownKeyError) as caught:
        await old.get_valid_access_token(user_id, "spotify")  # a fresh token: nothing to refresh

    assert caught.value.key_id == key_id(new_key)
    after = await _row(old.database, user_id)
    assert (after.status, after.last_sync_error, after.updated_at) == (
        before.status,
        before.last_sync_error,
        before.updated_at,
    )


async def test_a_token_failing_under_a_configured_key_is_still_tampering(
    service: TokenService, sandbox: SandboxServer
) -> None:
    user_id, _ = await seed_connection(service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(0))
    row = await _row(service.database, user_id)
    forged = (
        f"v2:{service.cipher.current_key_id}:"
        + TokenCipher(generate_key()).encrypt_column(row, "refresh_token", "sbx_rt_forged").split(":", 2)[2]
    )
    async with service.database.transaction() as session:
        await session.execute(update(ConnectionRow).where(ConnectionRow.id == row.id).values(refresh_token=forged))

    result = await service.engine.refresh(user_id, "spotify", trigger="scheduled")

    assert (result.outcome, result.reason) == ("failed", "decryption_error")
    assert (await _row(service.database, user_id)).status == "error"
    assert await _outbox_topics(service.database, user_id) == [service.settings.topic_token_refresh_failed]


@pytest.mark.parametrize("refuse", [True, False])
async def test_a_seed_format_ciphertext_in_a_row_is_refused_only_with_the_setting(
    make_service: ServiceFactory, sandbox: SandboxServer, refuse: bool
) -> None:
    service = make_service(refuse_unbound_ciphertexts=refuse)
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(0)
    )
    # What an attacker with write access to the table (or the original service) left there:
    # a seed-format ciphertext, which names no row.
    async with service.database.transaction() as session:
        await session.execute(
            update(ConnectionRow)
            .where(ConnectionRow.user_id == user_id)
            .values(refresh_token=service.cipher.encrypt(grant["live_refresh_token"]))
        )

    result = await service.engine.refresh(user_id, "spotify", trigger="scheduled")

    if refuse:
        assert (result.outcome, result.reason) == ("failed", "decryption_error")
        row = await _row(service.database, user_id)
        assert row.status == "error" and "REFUSE_UNBOUND_CIPHERTEXTS" in (row.last_sync_error or "")
    else:
        assert result.outcome == "refreshed"


async def test_rotation_names_the_key_ids_it_lacks_and_tells_when_no_seed_format_row_is_left(
    make_service: ServiceFactory,
    sandbox: SandboxServer,
    own_database_url: str,
    encryption_key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    current = make_service(database_url=own_database_url)
    seed_user, seed_grant = await seed_connection(
        current.database, current.cipher, sandbox, "spotify", expires_in=timedelta(hours=1)
    )
    async with current.database.transaction() as session:  # one row as the original service left it
        await session.execute(
            update(ConnectionRow)
            .where(ConnectionRow.user_id == seed_user)
            .values(refresh_token=current.cipher.encrypt(seed_grant["live_refresh_token"]))
        )
    stranger_key = generate_key()  # a worker elsewhere already writes under a key not given to us
    stranger = make_service(database_url=own_database_url, encryption_key=stranger_key)
    await seed_connection(stranger.database, stranger.cipher, sandbox, "spotify", expires_in=timedelta(hours=1))

    rotated = make_service(
        database_url=own_database_url, encryption_key=generate_key(), retired_encryption_keys=encryption_key
    )
    report = await rotate_keys(rotated.database, rotated.cipher)

    assert report.unknown_keys == {key_id(stranger_key): 1} and report.unreadable == 0
    assert report.remaining == 1 and report.seed_format == 0 and report.rotated == 1
    assert any(key_id(stranger_key) in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)

    # From the shell: non-zero, the key id named, and the seed format reported gone.
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": own_database_url,
        "ENCRYPTION_KEY": generate_key(),
        "RETIRED_ENCRYPTION_KEYS": rotated.settings.encryption_key.get_secret_value(),
    }
    run = await asyncio.to_thread(_token_refresh, env, "rotate-keys")
    assert run.returncode == 1
    assert key_id(stranger_key) in run.stderr and "not configured" in run.stderr
    assert "no row left in the seed format" in run.stderr


async def test_rotation_counts_seed_format_rows_left(
    make_service: ServiceFactory, sandbox: SandboxServer, own_database_url: str
) -> None:
    service = make_service(database_url=own_database_url, refuse_unbound_ciphertexts=True)
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(hours=1)
    )
    async with service.database.transaction() as session:
        await session.execute(
            update(ConnectionRow)
            .where(ConnectionRow.user_id == user_id)
            .values(access_token=service.cipher.encrypt(grant["live_access_token"]))
        )

    report = await rotate_keys(service.database, service.cipher)

    # Refused, it is not bound on the way either: a copied seed ciphertext stays unreadable.
    assert report.seed_format == 1 and report.unreadable == 1 and report.remaining == 1

    # The command reads the setting too: it neither binds the copy to its row nor exits 0.
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": own_database_url,
        "ENCRYPTION_KEY": service.settings.encryption_key.get_secret_value(),
        "REFUSE_UNBOUND_CIPHERTEXTS": "true",
    }
    run = await asyncio.to_thread(_token_refresh, env, "rotate-keys")
    assert run.returncode == 1 and "unreadable 1;" in run.stdout and "1 in the seed format" in run.stdout
    row = await _row(service.database, user_id)
    assert row.access_token is not None and not row.access_token.startswith("v2:")


def _token_refresh(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_app", *args], env=env, capture_output=True, text=True, timeout=120
    )
