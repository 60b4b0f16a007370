"""The refresh rollup (refresh_outcomes_hourly): every stored outcome counted exactly once, in
the transaction that stores it (one upsert per batch of outcomes), on PostgreSQL and on the
embedded SQLite default; old hours pruned by the leader's housekeeping."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from agents import scheduler
from agents.context import WorkerContext
from stream_app.clock import utc_now
from stream_app.db import Database
from stream_app.db.connections import update_fenced
from stream_app.db.migrate import upgrade_to_head
from stream_app.db.models import RefreshRollupRow
from stream_app.db.rollup import ROLLUP_RETENTION_DAYS, Tally, add_tallies, hour_of
from stream_app.engine import outcomes
from stream_app.sandbox import SandboxServer
from stream_app.service import TokenService
from stream_app.settings import load_settings
from tests.integration.conftest import ServiceFactory
from tests.support.connections import seed_connection
from tests.unit.agents.test_housekeeping import TimerApp

DUE = timedelta(minutes=2)


async def rollup_of(database: Database) -> dict[tuple[str, str, str], int]:
    async with database.sessions() as session:
        rows = (await session.scalars(select(RefreshRollupRow))).all()
    return {(row.platform, row.outcome, row.error_class): row.count for row in rows}


async def refresh_a_mix(service: TokenService, sandbox: SandboxServer, refreshed: int) -> list[str]:
    """``refreshed`` spotify refreshes in flight together, one discord grant refused for our
    client (failed, invalid_client) and one revoked (needs_reauth, invalid_grant)."""
    users = [
        (await seed_connection(service.database, service.cipher, sandbox, "spotify", expires_in=DUE))[0]
        for _ in range(refreshed)
    ]
    refused, _ = await seed_connection(service.database, service.cipher, sandbox, "discord", expires_in=DUE)
    revoked, grant = await seed_connection(service.database, service.cipher, sandbox, "discord", expires_in=DUE)
    sandbox.state.revoke(grant["grant_id"])
    results = await asyncio.gather(
        *(service.engine.refresh(user, "spotify", trigger="scheduled") for user in users),
        service.engine.refresh(revoked, "discord", trigger="scheduled"),
    )
    sandbox.state.add_fault({"platform": "discord", "mode": "invalid_client"})
    results.append(await service.engine.refresh(refused, "discord", trigger="scheduled"))
    return [result.outcome for result in results]


@pytest.mark.postgres
async def test_each_stored_outcome_is_counted_once_with_one_statement_per_batch(
    make_service: ServiceFactory, own_database_url: str, sandbox: SandboxServer
) -> None:
    service = make_service(database_url=own_database_url)
    commits = upserts = 0

    def on_commit(*_: Any) -> None:
        nonlocal commits
        commits += 1

    def on_statement(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        nonlocal upserts
        upserts += "INSERT INTO refresh_outcomes_hourly" in statement

    sync_engine = service.database.engine.sync_engine
    event.listen(sync_engine, "commit", on_commit)
    event.listen(sync_engine, "before_cursor_execute", on_statement)
    try:
        outcomes = await refresh_a_mix(service, sandbox, refreshed=30)
    finally:
        event.remove(sync_engine, "commit", on_commit)
        event.remove(sync_engine, "before_cursor_execute", on_statement)

    assert sorted(outcomes) == sorted(["refreshed"] * 30 + ["needs_reauth", "failed"])
    assert await rollup_of(service.database) == {
        ("spotify", "refreshed", ""): 30,
        ("discord", "needs_reauth", "invalid_grant"): 1,
        ("discord", "failed", "invalid_client"): 1,
    }
    # Outcomes went in shared batches, each counted with one upsert (never one per outcome).
    assert upserts < 32 // 2, upserts
    assert upserts <= commits
    async with service.database.sessions() as session:
        [hour] = (await session.scalars(select(RefreshRollupRow.hour).distinct())).all()
    assert hour == hour_of(utc_now()) or hour == hour_of(utc_now() - timedelta(minutes=1))


@pytest.mark.postgres
async def test_a_deferred_refresh_is_counted_with_its_reason_and_a_lost_race_is_not(
    make_service: ServiceFactory, own_database_url: str, sandbox: SandboxServer
) -> None:
    service = make_service(database_url=own_database_url, rate_limit_max_inline_wait_seconds=0)
    user, _ = await seed_connection(service.database, service.cipher, sandbox, "spotify", expires_in=DUE)
    sandbox.state.add_fault({"platform": "spotify", "mode": "rate_limit", "retry_after": 120})
    held = await service.engine.refresh(user, "spotify", trigger="scheduled")
    assert (held.outcome, held.reason) == ("deferred", "rate_limited")
    skipped = await service.engine.refresh(user, "spotify", trigger="scheduled")  # held: nothing stored
    assert skipped.outcome == "skipped"
    assert await rollup_of(service.database) == {("spotify", "deferred", "rate_limited"): 1}


async def test_the_rollup_on_the_sqlite_default(
    make_service: ServiceFactory, tmp_path: Path, sandbox: SandboxServer
) -> None:
    service = make_service(database_url=f"sqlite+aiosqlite:///{tmp_path / 'token_refresh.db'}")
    await upgrade_to_head(service.database)
    outcomes = await refresh_a_mix(service, sandbox, refreshed=3)
    assert sorted(outcomes) == sorted(["refreshed"] * 3 + ["needs_reauth", "failed"])
    assert await rollup_of(service.database) == {
        ("spotify", "refreshed", ""): 3,
        ("discord", "needs_reauth", "invalid_grant"): 1,
        ("discord", "failed", "invalid_client"): 1,
    }


@pytest.mark.postgres
async def test_the_leaders_housekeeping_prunes_hours_past_the_retention(
    own_database_url: str, encryption_key: str
) -> None:
    app = TimerApp()
    database = Database(own_database_url)
    context = SimpleNamespace(
        app=app,
        settings=load_settings(encryption_key=encryption_key),
        service=SimpleNamespace(engine=object(), database=database),
        publisher=SimpleNamespace(send_many=None),
        topic_names={"token.expiring": "token.expiring"},
    )
    scheduler.attach(cast(WorkerContext, context))
    timer = app.timers["prune_refresh_rollup"]
    assert timer.on_leader and timer.interval <= 60  # first run a minute after a leader starts
    now = utc_now()
    old = now - timedelta(days=ROLLUP_RETENTION_DAYS, hours=2)
    kept = now - timedelta(days=ROLLUP_RETENTION_DAYS - 1)
    try:
        async with database.transaction() as session:
            for moment in (old, kept, now, now):
                await add_tallies(session, [Tally("spotify", "failed", "server_error")] * 2, moment)
        await timer.run()
        async with database.sessions() as session:
            left = (await session.execute(select(RefreshRollupRow.hour, RefreshRollupRow.count))).all()
    finally:
        await database.dispose()
    assert sorted(left) == [(hour_of(kept), 2), (hour_of(now), 4)]


def commit_then_lose_the_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every batch of outcomes commits, then its reply is lost (the connection dropped)."""
    real = outcomes.OutcomeWriter._store_batch

    async def committed_then_lost(self: Any, writes: Any) -> list[bool]:
        await real(self, writes)
        raise OperationalError("COMMIT", {}, ConnectionResetError("connection lost before the reply"))

    monkeypatch.setattr(outcomes.OutcomeWriter, "_store_batch", committed_then_lost)


@pytest.mark.postgres
async def test_an_outcome_stored_again_after_a_lost_commit_reply_is_counted_once(
    make_service: ServiceFactory, own_database_url: str, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lone retry applies the fresh tokens again (the row still holds the spent token of a
    grant that does not rotate): the outcome is one, and so is its count."""
    commit_then_lose_the_reply(monkeypatch)
    service = make_service(database_url=own_database_url)
    user, _ = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=DUE, rotation="none"
    )
    async with asyncio.timeout(20):
        assert (await service.engine.refresh(user, "spotify", trigger="scheduled")).outcome == "refreshed"
    assert await rollup_of(service.database) == {("spotify", "refreshed", ""): 1}


@pytest.mark.postgres
async def test_spooled_tokens_stored_by_the_next_process_are_counted_once(
    make_service: ServiceFactory,
    own_database_url: str,
    sandbox: SandboxServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch that failed leaves its fresh tokens in the spool when the process stops before the
    lone retry stores them; the next process stores them and counts the refresh, unless the
    failed batch had committed after all (its event is in the outbox: counted then)."""
    real = outcomes.OutcomeWriter._store_batch
    retrying = asyncio.Event()

    async def spotify_commits_discord_fails(self: Any, writes: Any) -> list[bool]:
        if writes[0].row.platform == "spotify":
            await real(self, writes)
        raise OperationalError("COMMIT", {}, ConnectionResetError("connection lost"))

    async def lone_commit_stuck(*_: Any, **__: Any) -> bool:
        retrying.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    monkeypatch.setattr(outcomes.OutcomeWriter, "_store_batch", spotify_commits_discord_fails)
    # A cancelled refresh waits twice the longest call for its stuck commit: 2 s here.
    service = make_service(database_url=own_database_url, http_timeout_seconds=1, late_answer_seconds=0)
    committed_first, _ = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=DUE, rotation="none"
    )
    never_committed, _ = await seed_connection(
        service.database, service.cipher, sandbox, "discord", expires_in=DUE, rotation="none"
    )
    monkeypatch.setattr(outcomes, "update_fenced", lone_commit_stuck)
    for user, platform in ((committed_first, "spotify"), (never_committed, "discord")):
        retrying.clear()
        refreshing = asyncio.create_task(service.engine.refresh(user, platform, trigger="scheduled"))
        await asyncio.wait_for(retrying.wait(), timeout=20)
        refreshing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await refreshing
    monkeypatch.setattr(outcomes, "update_fenced", update_fenced)
    monkeypatch.setattr(outcomes.OutcomeWriter, "_store_batch", real)

    successor = make_service(database_url=own_database_url, token_spool_dir=service.settings.token_spool_dir)
    assert await successor.engine.store_spooled_tokens() == 2
    assert await rollup_of(service.database) == {("spotify", "refreshed", ""): 1, ("discord", "refreshed", ""): 1}
