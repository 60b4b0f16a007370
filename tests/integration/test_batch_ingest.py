"""`connection.created` events stored in batches: one transaction for many, with the same
result as applying them one by one in order."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event as sa_event

from schemas import ConnectionCreated
from stream_app import TokenService
from stream_app.db.connections import get_connection
from stream_app.ingest import Recorded, prepare_connection, record_connections
from tests.integration.conftest import ServiceFactory

pytestmark = pytest.mark.postgres

NOW = datetime.now(UTC)


def created(service: TokenService, user_id: uuid.UUID, *, access: str, at: datetime) -> ConnectionCreated:
    return ConnectionCreated(
        user_id=user_id,
        platform="spotify",
        access_token=service.cipher.encrypt(access),
        refresh_token=service.cipher.encrypt("refresh-" + access),
        token_expires_at=NOW + timedelta(hours=1),
        occurred_at=at,
    )


async def record(service: TokenService, events: list[ConnectionCreated]) -> list[Recorded]:
    prepared = [(event, prepare_connection(service.cipher, event, service.policy)) for event in events]
    return await record_connections(service.database, prepared)


async def stored_access_token(service: TokenService, user_id: uuid.UUID) -> str:
    async with service.database.sessions() as session:
        row = await get_connection(session, user_id, "spotify")
    assert row is not None
    return service.cipher.decrypt_column(row, "access_token")


async def test_a_batch_is_one_transaction(make_service: ServiceFactory) -> None:
    service = make_service()
    events = [created(service, uuid.uuid4(), access=f"token-{i}", at=NOW) for i in range(50)]
    commits = 0

    def count(*_: Any) -> None:
        nonlocal commits
        commits += 1

    sa_event.listen(service.database.engine.sync_engine, "commit", count)
    try:
        outcomes = await record(service, events)
    finally:
        sa_event.remove(service.database.engine.sync_engine, "commit", count)

    assert outcomes == [Recorded.STORED] * 50
    assert commits == 1
    assert await stored_access_token(service, events[17].user_id) == "token-17"


@pytest.mark.parametrize("order", ["oldest first", "newest first"])
async def test_of_several_events_for_one_connection_the_latest_lasts_whatever_their_order(
    make_service: ServiceFactory, order: str
) -> None:
    service = make_service()
    user = uuid.uuid4()
    older = created(service, user, access="older", at=NOW - timedelta(minutes=5))
    newer = created(service, user, access="newer", at=NOW)
    events = [older, newer] if order == "oldest first" else [newer, older]

    outcomes = await record(service, events)

    assert dict(zip([e.event_id for e in events], outcomes, strict=True)) == {
        newer.event_id: Recorded.STORED,
        older.event_id: Recorded.STALE,
    }
    assert await stored_access_token(service, user) == "newer"


async def test_of_equally_old_events_the_first_lasts_as_it_would_one_by_one(make_service: ServiceFactory) -> None:
    service = make_service()
    user = uuid.uuid4()
    first, second = (created(service, user, access=name, at=NOW) for name in ("first", "second"))

    assert await record(service, [first, second]) == [Recorded.STORED, Recorded.STALE]
    assert await stored_access_token(service, user) == "first"


async def test_an_event_seen_before_or_twice_in_a_batch_is_a_duplicate(make_service: ServiceFactory) -> None:
    service = make_service()
    applied = created(service, uuid.uuid4(), access="applied", at=NOW)
    assert await record(service, [applied]) == [Recorded.STORED]
    fresh = created(service, uuid.uuid4(), access="fresh", at=NOW)

    outcomes = await record(service, [applied, fresh, fresh])

    assert outcomes == [Recorded.DUPLICATE, Recorded.STORED, Recorded.DUPLICATE]


async def test_an_event_older_than_the_row_is_stale_and_changes_nothing(make_service: ServiceFactory) -> None:
    service = make_service()
    user = uuid.uuid4()
    await record(service, [created(service, user, access="current", at=NOW)])

    outcomes = await record(service, [created(service, user, access="replayed", at=NOW - timedelta(days=1))])

    assert outcomes == [Recorded.STALE]
    assert await stored_access_token(service, user) == "current"
