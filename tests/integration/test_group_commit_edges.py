"""Edges of the group commits found in review: what a batch does must be what its items would
have done one by one, and a failed batch must not weaken what a lone commit guaranteed."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from stream_app.db import ConnectionRow, OutboxRow
from stream_app.db.connections import get_connection
from stream_app.engine import claims, outcomes
from stream_app.ingest import Recorded
from stream_app.sandbox import SandboxServer
from tests.integration.conftest import ServiceFactory
from tests.integration.test_batch_ingest import NOW, created, record, stored_access_token
from tests.support.connections import seed_connection

pytestmark = pytest.mark.postgres

DUE = timedelta(minutes=2)


async def test_a_copy_of_an_event_id_later_in_the_batch_has_no_effect_whatever_it_says(
    make_service: ServiceFactory,
) -> None:
    """One by one, the second record with an id already applied is a duplicate and changes
    nothing, even if (a producer bug) its content differs: a later occurred_at must not let it win."""
    service = make_service()
    user = uuid.uuid4()
    first = created(service, user, access="first", at=NOW - timedelta(minutes=1))
    copy = created(service, user, access="copy", at=NOW).model_copy(update={"event_id": first.event_id})

    outcomes_ = await record(service, [first, copy])

    assert outcomes_ == [Recorded.STORED, Recorded.DUPLICATE]
    assert await stored_access_token(service, user) == "first"


async def test_fresh_tokens_are_spooled_as_soon_as_their_batch_fails(
    make_service: ServiceFactory, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's failure is the first failure of their commit: from then on the tokens are in
    the spool, so a stop while the lone retry is still stuck (a database coming back) loses nothing."""
    # A stop waits twice the longest call (HTTP_TIMEOUT_SECONDS + LATE_ANSWER_SECONDS) for the stuck commit.
    service = make_service(http_timeout_seconds=1, late_answer_seconds=1)
    spool_dir = Path(service.settings.token_spool_dir)
    user_id, grant = await seed_connection(service.database, service.cipher, sandbox, "discord", expires_in=DUE)
    retrying = asyncio.Event()

    async def batch_fails(*_: Any, **__: Any) -> list[bool]:
        raise OperationalError("UPDATE platform_connections ...", {}, ConnectionRefusedError("connection refused"))

    async def lone_commit_stuck(*_: Any, **__: Any) -> bool:
        retrying.set()
        await asyncio.Event().wait()  # a connection attempt to a database still restarting
        raise AssertionError("unreachable")

    monkeypatch.setattr(outcomes, "update_fenced_many", batch_fails)
    monkeypatch.setattr(outcomes, "update_fenced", lone_commit_stuck)
    refreshing = asyncio.create_task(service.engine.refresh(user_id, "discord", trigger="scheduled"))
    await asyncio.wait_for(retrying.wait(), timeout=30)

    assert len(list(spool_dir.glob("*.spool.json"))) == 1
    truth = sandbox.state.grant(grant["grant_id"])
    assert truth is not None and truth.refresh_count == 1
    spooled = b"".join(path.read_bytes() for path in spool_dir.glob("*.spool.json"))
    assert truth.live_refresh_token.encode() not in spooled and truth.live_access_token.encode() not in spooled
    refreshing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await refreshing
    assert len(list(spool_dir.glob("*.spool.json"))) == 1  # left for the next process


async def test_a_row_that_cannot_be_decided_fails_only_its_own_claim_not_its_batch(
    make_service: ServiceFactory, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row no decision can be made on (a failure nobody anticipated) fails its own refresh,
    as it did alone; the refreshes claimed in the same batch go on."""
    service = make_service()
    seeded = [
        (await seed_connection(service.database, service.cipher, sandbox, "spotify", expires_in=DUE))[0]
        for _ in range(4)
    ]
    broken = seeded[2]
    real = claims.decide_refresh  # type: ignore[attr-defined]

    def decide(row: ConnectionRow | None, *args: Any) -> Any:
        if row is not None and row.user_id == broken:
            raise OverflowError("date value out of range")
        return real(row, *args)

    monkeypatch.setattr(claims, "decide_refresh", decide)

    results = await asyncio.gather(
        *(service.engine.refresh(user, "spotify", trigger="scheduled") for user in seeded), return_exceptions=True
    )

    assert isinstance(results[2], OverflowError)
    assert [r.outcome for i, r in enumerate(results) if i != 2] == ["refreshed"] * 3  # type: ignore[union-attr]
    async with service.database.sessions() as session:
        row = await get_connection(session, broken, "spotify")
    assert row is not None and row.refresh_lease_owner is None


async def test_a_row_whose_expiry_is_at_the_calendars_start_is_refreshed(
    make_service: ServiceFactory, sandbox: SandboxServer
) -> None:
    """An expiry edited by hand to year 1 (its refresh time before it would overflow) is due
    since forever: refreshed, not an error at every scan."""
    service = make_service()
    user, _ = await seed_connection(service.database, service.cipher, sandbox, "spotify", expires_in=DUE)
    async with service.database.transaction() as session:
        await session.execute(
            update(ConnectionRow).where(ConnectionRow.user_id == user).values(token_expires_at=datetime(1, 1, 1))
        )

    result = await service.engine.refresh(user, "spotify", trigger="scheduled")

    assert result.outcome == "refreshed"


async def test_a_commit_whose_reply_was_lost_is_retried_without_failing_on_its_own_event(
    make_service: ServiceFactory, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch committed, but its reply never came (the connection dropped): the outcome is
    stored again alone. The row still holds the spent token (this grant does not rotate), so it
    is applied again, and its event, already in the outbox, must not fail that retry (fresh
    tokens are retried whatever the error: it would never end)."""
    real = outcomes.OutcomeWriter._store_batch

    async def committed_then_lost(self: Any, writes: Any) -> list[bool]:
        await real(self, writes)
        raise OperationalError("COMMIT", {}, ConnectionResetError("connection lost before the reply"))

    monkeypatch.setattr(outcomes.OutcomeWriter, "_store_batch", committed_then_lost)  # before the service binds it
    service = make_service()
    user, _ = await seed_connection(
        service.database, service.cipher, sandbox, "spotify", expires_in=DUE, rotation="none"
    )

    async with asyncio.timeout(20):
        result = await service.engine.refresh(user, "spotify", trigger="scheduled")

    assert result.outcome == "refreshed"
    async with service.database.sessions() as session:
        row = await get_connection(session, user, "spotify")
        assert row is not None
        events = (await session.execute(select(OutboxRow).where(OutboxRow.key == f"{user}:spotify".encode()))).all()
    assert len(events) == 1
