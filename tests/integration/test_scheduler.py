"""The expiry scan pages through what is due, in due order, and does not request it twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from schemas import TokenExpiring
from stream_app.crypto import TokenCipher
from stream_app.db import Database
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

    async def emit(event: TokenExpiring) -> None:
        emitted.append(event)

    await scan_expiring(database, settings, emit)
    mine = [event.user_id for event in emitted if event.user_id in ours]
    expected_order = [user_id for minutes, user_id in sorted(due) if minutes <= 6]  # 7 min: due in 2 min > interval
    assert mine == expected_order
    assert all(event.reason == "scheduled" for event in emitted)

    emitted.clear()
    await scan_expiring(database, settings, emit)
    assert not [event for event in emitted if event.user_id in ours]  # requested already: not again
