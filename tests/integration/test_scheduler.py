"""The expiry scan pages through what is due, in due order, emits a page at once, marks it only
once the whole page was delivered, and does not request it twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiokafka.errors import KafkaTimeoutError
from sqlalchemy import delete, update

from schemas import TokenExpiring
from stream_app.clock import utc_now
from stream_app.crypto import TokenCipher
from stream_app.db import ConnectionRow, Database
from stream_app.sandbox import SandboxServer
from stream_app.scheduler import scan_expiring
from stream_app.settings import Settings, load_settings
from tests.support.connections import seed_connection

pytestmark = pytest.mark.postgres


@pytest.fixture
async def database(postgres_url: str) -> AsyncIterator[Database]:
    database = Database(postgres_url)
    yield database
    await database.dispose()


async def test_scan_pages_in_due_order_and_marks_what_it_requested(
    database: Database, encryption_key: str, sandbox: SandboxServer
) -> None:
    settings: Settings = load_settings(encryption_key=encryption_key, scan_page_size=2, scan_interval_seconds=60)
    cipher = TokenCipher(encryption_key)
    due = []
    for minutes in (7, 3, 6, 4, 5):  # due now or within the interval (buffer 5 min + 1 min)
        user_id, _ = await seed_connection(database, cipher, sandbox, "spotify", expires_in=timedelta(minutes=minutes))
        due.append((minutes, user_id))
    later, _ = await seed_connection(database, cipher, sandbox, "spotify", expires_in=timedelta(minutes=30))
    ours = {user_id for _, user_id in due} | {later}

    emitted: list[TokenExpiring] = []

    async def emit_many(events: list[TokenExpiring]) -> None:
        assert 0 < len(events) <= settings.scan_page_size
        emitted.extend(events)

    await scan_expiring(database, settings, emit_many)
    mine = [event.user_id for event in emitted if event.user_id in ours]
    expected_order = [user_id for minutes, user_id in sorted(due) if minutes <= 6]  # 7 min: due in 2 min > interval
    assert mine == expected_order
    assert all(event.reason == "scheduled" for event in emitted)

    emitted.clear()
    await scan_expiring(database, settings, emit_many)
    assert not [event for event in emitted if event.user_id in ours]  # requested already: not again


async def test_a_page_whose_delivery_failed_stays_unmarked(
    own_database_url: str, encryption_key: str, sandbox: SandboxServer
) -> None:
    database = Database(own_database_url)
    try:
        settings = load_settings(encryption_key=encryption_key, scan_page_size=3, scan_interval_seconds=60)
        cipher = TokenCipher(encryption_key)
        for minutes in range(1, 7):
            await seed_connection(database, cipher, sandbox, "spotify", expires_in=timedelta(minutes=minutes))
        pages: list[list[TokenExpiring]] = []

        async def second_page_fails(events: list[TokenExpiring]) -> None:
            pages.append(events)
            if len(pages) == 2:
                raise KafkaTimeoutError()

        with pytest.raises(KafkaTimeoutError):
            await scan_expiring(database, settings, second_page_fails)
        assert [len(page) for page in pages] == [3, 3]  # whole pages, one call each

        retried: list[TokenExpiring] = []

        async def emit_many(events: list[TokenExpiring]) -> None:
            retried.extend(events)

        assert await scan_expiring(database, settings, emit_many) == 3
        # The first page was marked, the failed one was not.
        assert [event.user_id for event in retried] == [event.user_id for event in pages[1]]
        assert await scan_expiring(database, settings, emit_many) == 0
    finally:
        await database.dispose()


async def test_a_lost_request_is_repeated_by_the_scanning_process_not_through_the_topic(
    own_database_url: str, encryption_key: str, sandbox: SandboxServer
) -> None:
    """A request still not done half a buffer later was lost with the worker that had it (or
    the broker): its repeat is refreshed by the scanning process itself."""
    settings = load_settings(encryption_key=encryption_key, refresh_buffer_seconds=300, scan_interval_seconds=60)
    database = Database(own_database_url)
    cipher = TokenCipher(encryption_key)
    try:
        lost, _ = await seed_connection(database, cipher, sandbox, "spotify", expires_in=timedelta(minutes=4))
        new, _ = await seed_connection(database, cipher, sandbox, "spotify", expires_in=timedelta(minutes=4))
        async with database.transaction() as session:
            await session.execute(
                update(ConnectionRow)
                .where(ConnectionRow.user_id == lost)
                .values(refresh_requested_at=utc_now() - timedelta(seconds=200))  # more than half the buffer ago
            )
        emitted: list[TokenExpiring] = []
        repeated: list[TokenExpiring] = []

        async def emit_many(events: list[TokenExpiring]) -> None:
            emitted.extend(events)

        async def repeat_here(events: list[TokenExpiring]) -> None:
            repeated.extend(events)

        assert await scan_expiring(database, settings, emit_many, repeat_here=repeat_here) == 2
        assert [e.user_id for e in emitted] == [new]
        assert [e.user_id for e in repeated] == [lost]
        # Without a local path (the service's own scan), everything goes through emit_many.
        async with database.transaction() as session:
            await session.execute(update(ConnectionRow).values(refresh_requested_at=None))
        emitted.clear()
        await scan_expiring(database, settings, emit_many)
        assert {e.user_id for e in emitted} == {lost, new}
    finally:
        await database.dispose()


async def test_a_row_whose_expiry_no_event_may_carry_is_requested_without_it(
    database: Database, encryption_key: str, sandbox: SandboxServer
) -> None:
    """A row edited by hand to an absurd expiry must not fail the scan's page (and with it every
    scan after): its request says no expiry, the refresh decides from the row."""
    settings: Settings = load_settings(encryption_key=encryption_key, scan_interval_seconds=60)
    cipher = TokenCipher(encryption_key)
    user_id, _ = await seed_connection(database, cipher, sandbox, "spotify", expires_in=timedelta(minutes=3))
    async with database.transaction() as session:
        await session.execute(
            update(ConnectionRow)
            .where(ConnectionRow.user_id == user_id)
            .values(token_expires_at=utc_now().replace(year=1), refresh_due_at=utc_now() - timedelta(minutes=1))
        )
    emitted: list[TokenExpiring] = []

    async def emit_many(events: list[TokenExpiring]) -> None:
        emitted.extend(events)

    try:
        await scan_expiring(database, settings, emit_many)
    finally:  # the database is shared: other suites' workers would refresh it
        async with database.transaction() as session:
            await session.execute(delete(ConnectionRow).where(ConnectionRow.user_id == user_id))

    mine = [event for event in emitted if event.user_id == user_id]
    assert len(mine) == 1 and mine[0].token_expires_at is None
