"""Tokens the provider issued are never dropped: the commit is retried through pool timeouts
and database errors for as long as the process lives, a process that must stop leaves them in
the spool for the next one, and a holder whose lease lapsed still stores them while the row
holds the refresh token it spent."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from stream_app import TokenService
from stream_app.db import ConnectionRow, OutboxRow
from stream_app.db.connections import get_connection
from stream_app.engine import outcomes
from stream_app.engine.spool import SpooledOutcome, TokenSpool
from stream_app.sandbox import SandboxServer
from tests.integration.conftest import ServiceFactory
from tests.support.connections import seed_connection

pytestmark = pytest.mark.postgres

DUE = timedelta(minutes=2)


class FailingStores:
    """Storing outcomes (``update_fenced``, or ``update_fenced_many`` for a batch) failing ``times``
    times in all (None: until told to stop) with ``error``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, error: Exception, times: int | None) -> None:
        self.calls = 0
        self.failing = True
        for name in ("update_fenced", "update_fenced_many"):
            monkeypatch.setattr(outcomes, name, self._failing(getattr(outcomes, name), error, times))

    def _failing(self, real: Any, error: Exception, times: int | None) -> Any:
        async def store(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.failing and (times is None or self.calls <= times):
                raise error
            return await real(*args, **kwargs)

        return store


def pool_timeout() -> PoolTimeoutError:
    return PoolTimeoutError("QueuePool limit of size 1 overflow 0 reached, connection timed out")


def database_down() -> OperationalError:
    return OperationalError("UPDATE platform_connections ...", {}, ConnectionRefusedError("connection refused"))


async def row_of(service: TokenService, user_id: uuid.UUID, platform: str) -> ConnectionRow:
    async with service.database.sessions() as session:
        row = await get_connection(session, user_id, platform)
    assert row is not None
    return row


@pytest.mark.parametrize("error", [pool_timeout(), database_down()], ids=["pool-timeout", "database-down"])
async def test_a_failing_commit_of_fresh_tokens_is_retried_until_it_succeeds(
    make_service: ServiceFactory, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    service = make_service()
    user_id, grant = await seed_connection(service.database, service.cipher, sandbox, "discord", expires_in=DUE)
    stores = FailingStores(monkeypatch, error, times=4)

    result = await service.engine.refresh(user_id, "discord", trigger="scheduled")

    assert result.outcome == "refreshed" and stores.calls == 5
    truth = sandbox.state.grant(grant["grant_id"])
    assert truth is not None and truth.refresh_count == 1  # single-use: the old token is spent
    row = await row_of(service, user_id, "discord")
    assert service.cipher.decrypt_column(row, "refresh_token") == truth.live_refresh_token
    assert row.refresh_lease_owner is None  # the commit released the lease too
    assert list(Path(service.settings.token_spool_dir).glob("*.spool.json")) == []  # stored: spool cleared


async def test_a_process_stopped_while_storing_leaves_its_tokens_to_the_next(
    make_service: ServiceFactory, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stop waits twice the longest call (HTTP_TIMEOUT_SECONDS + LATE_ANSWER_SECONDS) for the stuck commit.
    service = make_service(http_timeout_seconds=1, late_answer_seconds=1)
    spool_dir = Path(service.settings.token_spool_dir)
    user_id, grant = await seed_connection(service.database, service.cipher, sandbox, "discord", expires_in=DUE)
    stores = FailingStores(monkeypatch, database_down(), times=None)
    refreshing = asyncio.create_task(service.engine.refresh(user_id, "discord", trigger="scheduled"))
    while not list(spool_dir.glob("*.spool.json")):
        assert not refreshing.done()
        await asyncio.sleep(0.05)
    refreshing.cancel()  # the process must stop (SIGTERM) while the database is still away
    with pytest.raises(asyncio.CancelledError):
        await refreshing

    truth = sandbox.state.grant(grant["grant_id"])
    assert truth is not None and truth.refresh_count == 1
    spooled = b"".join(path.read_bytes() for path in spool_dir.glob("*.spool.json"))
    for token in (truth.live_access_token, truth.live_refresh_token, grant["live_refresh_token"]):
        assert token.encode() not in spooled  # sealed, never plain text
    row = await row_of(service, user_id, "discord")
    assert service.cipher.decrypt_column(row, "refresh_token") == grant["live_refresh_token"]  # the spent one

    stores.failing = False
    async with make_service() as restarted:  # the next process on this spool stores them at start
        row = await row_of(restarted, user_id, "discord")
        assert restarted.cipher.decrypt_column(row, "refresh_token") == truth.live_refresh_token
        assert restarted.cipher.decrypt_column(row, "access_token") == truth.live_access_token
        assert row.status == "connected"
        async with restarted.database.sessions() as session:
            topics = (
                await session.scalars(select(OutboxRow.topic).where(OutboxRow.key == f"{user_id}:discord".encode()))
            ).all()
        assert topics == [restarted.settings.topic_token_refreshed]
    assert list(spool_dir.glob("*.spool.json")) == []


async def test_spooled_tokens_for_a_connection_that_moved_on_are_not_stored(
    make_service: ServiceFactory, sandbox: SandboxServer
) -> None:
    service = make_service()
    user_id, _ = await seed_connection(service.database, service.cipher, sandbox, "spotify", expires_in=DUE)
    row = await row_of(service, user_id, "spotify")
    stale = SpooledOutcome(
        connection_id=row.id,
        user_id=user_id,
        platform="spotify",
        spent_refresh_token=service.cipher.encrypt_column(row, "refresh_token", "a token the row no longer holds"),
        values={"access_token": row.access_token, "last_sync_error": "from the spool"},
        topic=service.settings.topic_token_refreshed,
        event_id=uuid.uuid4(),
        key=b"k",
        payload=b"{}",
    )
    TokenSpool(Path(service.settings.token_spool_dir)).write(stale).release()

    assert await service.engine.store_spooled_tokens() == 0
    assert (await row_of(service, user_id, "spotify")).last_sync_error is None
    assert list(Path(service.settings.token_spool_dir).glob("*.spool.json")) == []


def test_an_entry_whose_writer_still_lives_is_left_to_it(tmp_path: Path) -> None:
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time, uuid
                from pathlib import Path
                from stream_app.engine.spool import SpooledOutcome, TokenSpool
                TokenSpool(Path({str(tmp_path)!r})).write(SpooledOutcome(
                    uuid.uuid4(), uuid.uuid4(), "spotify", "spent", {{}}, "topic", uuid.uuid4(), b"k", b"{{}}"))
                print("written", flush=True)
                time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == b"written\n"
        assert list(TokenSpool(tmp_path).orphans()) == []  # locked by a live process
    finally:
        writer.kill()
        writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()
    orphans = list(TokenSpool(tmp_path).orphans())
    assert len(orphans) == 1 and orphans[0][1].spent_refresh_token == "spent"
    orphans[0][0].discard()


async def test_fresh_tokens_are_stored_though_the_lease_lapsed_while_the_row_holds_the_spent_token(
    make_service: ServiceFactory, sandbox: SandboxServer
) -> None:
    """The worst case of a slow provider: our lease lapsed, another process took it, spent the
    same (already rotated) refresh token, was refused and marked the connection needs_reauth;
    meanwhile `rotate-keys` re-encrypted the row. Our answer holds the only working tokens:
    they must still be stored."""
    service = make_service()
    user_id, grant = await seed_connection(service.database, service.cipher, sandbox, "discord", expires_in=DUE)
    sandbox.state.latency = 1.0
    refreshing = asyncio.create_task(service.engine.refresh(user_id, "discord", trigger="scheduled"))
    while not [r for r in sandbox.state.history() if r.get("grant_id") == grant["grant_id"]]:
        truth = sandbox.state.grant(grant["grant_id"])
        if truth is not None and truth.in_flight:
            break
        await asyncio.sleep(0.01)
    before = await row_of(service, user_id, "discord")
    reencrypted = service.cipher.encrypt_column(before, "refresh_token", grant["live_refresh_token"])
    assert reencrypted != before.refresh_token
    async with service.database.transaction() as session:  # what the other process did meanwhile
        await session.execute(
            update(ConnectionRow)
            .where(ConnectionRow.user_id == user_id, ConnectionRow.platform == "discord")
            .values(
                refresh_token=reencrypted,
                refresh_lease_owner="other-process",
                status="needs_reauth",
                last_sync_error="invalid_grant",
                version=ConnectionRow.version + 1,
            )
        )
    result = await refreshing
    sandbox.state.latency = 0.0

    assert result.outcome == "refreshed"
    truth = sandbox.state.grant(grant["grant_id"])
    row = await row_of(service, user_id, "discord")
    assert truth is not None and row.status == "connected"
    assert service.cipher.decrypt_column(row, "refresh_token") == truth.live_refresh_token
    assert row.refresh_lease_owner == "other-process"  # not ours to clear


async def test_a_refresh_cancelled_mid_call_still_stores_what_the_provider_rotated(
    make_service: ServiceFactory, sandbox: SandboxServer
) -> None:
    """A worker stopping (SIGTERM, a rolling deploy) cancels the refreshes in flight; a call the
    provider is already answering has spent a single-use refresh token, so its answer is kept."""
    service = make_service()
    user_id, grant = await seed_connection(service.database, service.cipher, sandbox, "discord", expires_in=DUE)
    sandbox.state.latency = 1.0
    try:
        refreshing = asyncio.create_task(service.engine.refresh(user_id, "discord", trigger="scheduled"))
        while not (truth := sandbox.state.grant(grant["grant_id"])) or not truth.in_flight:
            await asyncio.sleep(0.01)
        refreshing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await refreshing
    finally:
        sandbox.state.latency = 0.0
    truth = sandbox.state.grant(grant["grant_id"])
    assert truth is not None and truth.refresh_count == 1
    row = await row_of(service, user_id, "discord")
    assert service.cipher.decrypt_column(row, "refresh_token") == truth.live_refresh_token
