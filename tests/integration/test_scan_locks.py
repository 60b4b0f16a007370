"""The expiry scan holds no row lock while its page is on its way to the broker.

A page's marks are committed before its records are sent, so a claim batch of refreshes that
touches one of the page's rows never waits for the broker (it used to wait for the page's
acknowledgements: up to the scan's broker deadline, 30 s by default, for every refresh of the
batch). What that costs, and who makes up for it: a page whose delivery fails is un-marked
(the next scan sends it again), and one whose scanning process dies between its commit and its
delivery is a lost request, repeated by the scanning process half a buffer later.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from aiokafka.errors import KafkaTimeoutError
from sqlalchemy import insert, select, update

from agents.local import LocalRefreshes
from agents.scheduler import publish_or_refresh_here
from schemas import TokenExpiring
from stream_app.catalog import REFRESHABLE_PLATFORMS
from stream_app.clock import utc_now
from stream_app.crypto import generate_key
from stream_app.db import ConnectionRow, Database
from stream_app.db.scan import claim_due_page
from stream_app.decisions import RefreshPolicy
from stream_app.engine.claims import ClaimRequest, Claims
from stream_app.engine.lease import Leases
from stream_app.publisher import OutgoingRecord
from stream_app.scheduler import scan_expiring, scan_requests
from stream_app.settings import Settings, load_settings

pytestmark = pytest.mark.postgres

BUFFER_SECONDS = 300.0


@pytest.fixture
async def database(own_database_url: str) -> AsyncIterator[Database]:
    database = Database(own_database_url)
    yield database
    await database.dispose()


def scan_settings(database: Database, page_size: int = 10) -> Settings:
    return load_settings(
        encryption_key=generate_key(),
        database_url=database.url.render_as_string(hide_password=False),
        scan_page_size=page_size,
        scan_interval_seconds=60,
        refresh_buffer_seconds=BUFFER_SECONDS,
    )


async def insert_connections(database: Database, *, due: int, later: int = 0) -> list[dict[str, Any]]:
    """``due`` connections due now (in due order), then ``later`` due in hours; placeholder
    tokens (neither the scan nor a claim decrypts)."""
    now = utc_now()
    rows: list[dict[str, Any]] = []
    for index in range(due + later):
        due_at = now - timedelta(seconds=due - index) if index < due else now + timedelta(hours=2, seconds=index)
        rows.append(
            {
                "id": uuid.uuid4(),
                "user_id": uuid.uuid4(),
                "platform": "spotify",
                "access_token": "placeholder",
                "refresh_token": "placeholder",
                "token_expires_at": due_at + timedelta(seconds=BUFFER_SECONDS),
                "token_lifetime_seconds": 3600,
                "status": "connected",
                "version": 0,
                "consecutive_failures": 0,
                "refresh_due_at": due_at,
            }
        )
    async with database.transaction() as session:
        await session.execute(insert(ConnectionRow), rows)
    return rows


async def requested_at(database: Database, ids: list[uuid.UUID]) -> dict[uuid.UUID, datetime | None]:
    async with database.sessions() as session:
        query = select(ConnectionRow.id, ConnectionRow.refresh_requested_at).where(ConnectionRow.id.in_(ids))
        return {row_id: mark for row_id, mark in (await session.execute(query)).all()}


async def test_a_claim_batch_does_not_wait_for_a_page_on_its_way_to_a_slow_broker(database: Database) -> None:
    """The scan's page is on its way and the broker has not acknowledged it yet. A claim batch
    of four refreshes, one of them for a row of that page, takes all four leases at once (it
    used to wait, all four of it, until the broker answered or the scan's deadline passed)."""
    page = await insert_connections(database, due=3, later=3)
    in_page, others = page[0], page[3:]
    sent = asyncio.Event()
    broker_answers = asyncio.Event()

    async def slow_broker(events: list[TokenExpiring]) -> None:
        sent.set()
        await broker_answers.wait()

    scan = asyncio.create_task(scan_expiring(database, scan_settings(database), slow_broker))
    claims = Claims(database, Leases(database, ttl=30), RefreshPolicy(buffer_seconds=BUFFER_SECONDS))
    try:
        await asyncio.wait_for(sent.wait(), 10)
        requests = [ClaimRequest(in_page["user_id"], "spotify", "scheduled", forget_if_held=False)] + [
            ClaimRequest(row["user_id"], "spotify", "manual", forget_if_held=False) for row in others
        ]
        # A claim takes milliseconds; the page's broker would hold it until it answers.
        async with asyncio.timeout(10):
            results = await asyncio.gather(*(claims.claim(request) for request in requests))
        assert [result.held is not None for result in results] == [True] * 4
        assert not scan.done()  # the broker still has not answered: the page is still on its way
    finally:
        broker_answers.set()
        assert await asyncio.wait_for(scan, 30) == 3
    # The page's marks were committed before it was sent: nobody requests it again meanwhile.
    marks = await requested_at(database, [row["id"] for row in page[:3]])
    assert all(mark is not None for mark in marks.values())


async def test_a_broker_slower_than_the_deadline_holds_no_claim_and_the_page_is_refreshed_here(
    database: Database,
) -> None:
    """The worker's own emit against a broker that never answers: while it waits (8 s here, 30 s
    by default), a claim batch on the page's rows goes through; at the deadline the page is
    refreshed in the scanning process, and stays marked, so the next scan within the interval
    does not ask again."""
    rows = await insert_connections(database, due=3)
    sending = asyncio.Event()
    started_here: list[tuple[str, list[uuid.UUID]]] = []

    class RefreshedHere:
        def start(self, events: list[TokenExpiring], why: str) -> None:
            started_here.append((why, [event.user_id for event in events]))

    async def never_acknowledged(records: Sequence[OutgoingRecord]) -> None:
        sending.set()
        await asyncio.Event().wait()

    emit = publish_or_refresh_here(
        never_acknowledged, cast(LocalRefreshes, RefreshedHere()), "token.expiring", deadline=8
    )
    settings = scan_settings(database)
    scan = asyncio.create_task(scan_requests(database, settings, emit))
    claims = Claims(database, Leases(database, ttl=30), RefreshPolicy(buffer_seconds=BUFFER_SECONDS))
    try:
        await asyncio.wait_for(sending.wait(), 10)
        async with asyncio.timeout(5):
            results = await asyncio.gather(
                *(claims.claim(ClaimRequest(row["user_id"], "spotify", "scheduled", False)) for row in rows)
            )
        assert all(result.held is not None for result in results)
        assert not scan.done()  # still waiting for the broker
    finally:
        assert await asyncio.wait_for(scan, 30) == 3
    assert started_here == [("broker_unavailable", [row["user_id"] for row in rows])]
    assert await scan_requests(database, settings, emit) == 0


async def test_a_page_being_sent_looks_requested_to_a_second_scan(database: Database) -> None:
    """Two scans at once (a leader handing over): the second one, started while the first one's
    page is on its way, finds nothing to request; the page is requested once."""
    rows = await insert_connections(database, due=5)
    settings = scan_settings(database)
    sent = asyncio.Event()
    broker_answers = asyncio.Event()
    first: list[uuid.UUID] = []
    second: list[uuid.UUID] = []

    async def slow_broker(events: list[TokenExpiring]) -> None:
        first.extend(event.user_id for event in events)
        sent.set()
        await broker_answers.wait()

    async def emit_second(events: list[TokenExpiring]) -> None:
        second.extend(event.user_id for event in events)

    scan = asyncio.create_task(scan_expiring(database, settings, slow_broker))
    try:
        await asyncio.wait_for(sent.wait(), 10)
        assert await asyncio.wait_for(scan_expiring(database, settings, emit_second), 10) == 0
    finally:
        broker_answers.set()
        assert await asyncio.wait_for(scan, 30) == 5
    assert first == [row["user_id"] for row in rows] and second == []


async def test_a_failed_page_goes_back_to_the_marks_it_had(database: Database) -> None:
    """The broker refuses a page holding a new request and a repeat of a lost one: both rows
    get back what they had (no mark, the lost request's old mark), so the next scan sends the
    first through the topic again and repeats the lost one in its own process, as before."""
    new, lost = (row["id"] for row in await insert_connections(database, due=2))
    earlier = utc_now() - timedelta(seconds=BUFFER_SECONDS / 2 + 20)
    async with database.transaction() as session:
        await session.execute(
            update(ConnectionRow).where(ConnectionRow.id == lost).values(refresh_requested_at=earlier)
        )
    settings = scan_settings(database)

    async def refused(events: list[TokenExpiring]) -> None:
        raise KafkaTimeoutError()

    repeated: list[TokenExpiring] = []

    async def repeat_here(events: list[TokenExpiring]) -> None:
        repeated.extend(events)

    with pytest.raises(KafkaTimeoutError):
        await scan_expiring(database, settings, refused, repeat_here=repeat_here)
    assert repeated == []
    assert await requested_at(database, [new, lost]) == {new: None, lost: earlier}


async def test_a_page_whose_scanner_died_before_sending_it_is_repeated_by_the_next_scanner(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Who makes up for marks committed before their records went out, when the scanning process
    dies in between: no scan asks again while the request may still be in flight (less than half
    a buffer), the first scan after that refreshes them in its own process (``repeat_here``),
    still a buffer's half ahead of the expiry."""
    rows = await insert_connections(database, due=3)
    crashed_at = utc_now()
    async with database.transaction() as session:  # what a scan commits before it sends
        claimed = await claim_due_page(
            session,
            due_by=crashed_at + timedelta(seconds=60),
            requested_before=crashed_at - timedelta(seconds=BUFFER_SECONDS / 2),
            after=None,
            limit=10,
            platforms=REFRESHABLE_PLATFORMS,
            now=crashed_at,
        )
    assert [row.id for row in claimed] == [row["id"] for row in rows]
    # ... and the process dies: nothing was sent.
    settings = scan_settings(database)
    emitted: list[TokenExpiring] = []
    repeated: list[TokenExpiring] = []

    async def emit_many(events: list[TokenExpiring]) -> None:
        emitted.extend(events)

    async def repeat_here(events: list[TokenExpiring]) -> None:
        repeated.extend(events)

    for seconds_later in (60, 120):  # the next scans, within half a buffer: not again
        monkeypatch.setattr("stream_app.scheduler.utc_now", lambda s=seconds_later: crashed_at + timedelta(seconds=s))
        assert await scan_expiring(database, settings, emit_many, repeat_here=repeat_here) == 0
    monkeypatch.setattr("stream_app.scheduler.utc_now", lambda: crashed_at + timedelta(seconds=180))
    assert await scan_expiring(database, settings, emit_many, repeat_here=repeat_here) == 3
    assert emitted == []
    assert [event.user_id for event in repeated] == [row["user_id"] for row in rows]
    assert all(row["token_expires_at"] > crashed_at + timedelta(seconds=180) for row in rows)
