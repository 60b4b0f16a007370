"""The notifier's store on SQLite (the demo's database): its schema version, the dedupe key,
retention of finished deliveries."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from stream_app.notify.channel import Route
from stream_app.notify.intake import delivery_row
from stream_app.notify.notice import Notice
from stream_app.notify.store import SchemaTooNew, Store, deliveries, schema_versions

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


def notice() -> Notice:
    return Notice(uuid.uuid4(), "needs_reauth", "spotify", uuid.uuid4(), NOW, {"event_type": "token.needs_reauth"})


def row(item: Notice, status: str = "pending", created_at: datetime = NOW) -> dict[str, object]:
    return delivery_row(
        item, channel="mail", route=Route.NOW, problem=True, status=status, next_attempt_at=NOW, now=created_at
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    made = Store(f"sqlite+aiosqlite:///{tmp_path / 'notify.db'}")
    await made.prepare()
    yield made
    await made.dispose()


async def test_the_schema_is_created_once_and_a_newer_one_is_refused(store: Store) -> None:
    await store.prepare()  # again: nothing changes
    async with store.begin() as connection:
        assert (await connection.execute(select(schema_versions.c.version))).scalars().all() == [1]
        await connection.execute(update(schema_versions).values(version=2))
    with pytest.raises(SchemaTooNew, match="DATABASE_URL: the notifier's tables are at schema version 2"):
        await store.prepare()


async def test_a_key_is_inserted_once(store: Store) -> None:
    first, second = notice(), notice()
    async with store.begin() as connection:
        assert await store.insert_deliveries(connection, [row(first)]) == {(first.notice_id, "mail")}
        inserted = await store.insert_deliveries(connection, [row(first), row(second)])
    assert inserted == {(second.notice_id, "mail")}


async def test_finished_deliveries_past_the_retention_are_pruned_and_nothing_else(store: Store) -> None:
    old = NOW - timedelta(days=40)
    kept_pending, kept_recent = notice(), notice()
    pruned = [notice() for _ in range(4)]
    rows = [row(n, status, old) for n, status in zip(pruned, ("sent", "dead", "suppressed", "dropped"), strict=True)]
    rows += [row(kept_pending, "pending", old), row(kept_recent, "sent", NOW)]
    async with store.begin() as connection:
        await store.insert_deliveries(connection, rows)
    assert await store.prune(before=NOW - timedelta(days=30), limit=3) == 3
    assert await store.prune(before=NOW - timedelta(days=30)) == 1
    async with store.begin() as connection:
        left = set((await connection.execute(select(deliveries.c.notice_id))).scalars())
    assert left == {kept_pending.notice_id, kept_recent.notice_id}


async def test_one_digest_of_a_platform_at_a_time_and_once_per_window(store: Store) -> None:
    def digest_row(item: Notice) -> dict[str, object]:
        return delivery_row(
            item, channel="ops", route=Route.DIGEST, problem=True, status="pending", next_attempt_at=NOW, now=NOW
        )

    first, meanwhile = notice(), notice()
    lease = NOW + timedelta(seconds=120)

    async def claim(owner: str, at: datetime) -> list[uuid.UUID]:
        claimed = await store.claim_digest(
            channel="ops", platform="spotify", owner=owner, now=at, lease_until=lease, window_seconds=3600
        )
        return [item.notice_id for item in claimed]

    async with store.begin() as connection:
        await store.insert_deliveries(connection, [digest_row(first)])
    assert await claim("a", NOW) == [first.notice_id]
    async with store.begin() as connection:
        await store.insert_deliveries(connection, [digest_row(meanwhile)])
    assert await claim("b", NOW + timedelta(seconds=1)) == []  # one is in flight (another notifier's)
    assert await store.mark_sent([first], channel="ops", owner="a", now=NOW + timedelta(seconds=2)) == 1
    await store.record_digest(channel="ops", platform="spotify", sent_at=NOW + timedelta(seconds=2), retry_at=None)
    assert await claim("b", NOW + timedelta(seconds=3)) == []  # within the window
    assert await claim("b", NOW + timedelta(seconds=3603)) == [meanwhile.notice_id]


async def test_a_digest_whose_notifier_died_may_go_once_its_lease_lapses(store: Store) -> None:
    item = notice()
    async with store.begin() as connection:
        await store.insert_deliveries(
            connection,
            [
                delivery_row(
                    item,
                    channel="ops",
                    route=Route.DIGEST,
                    problem=True,
                    status="pending",
                    next_attempt_at=NOW,
                    now=NOW,
                )
            ],
        )
    lease = NOW + timedelta(seconds=120)
    options = {"channel": "ops", "platform": "spotify", "lease_until": lease, "window_seconds": 3600}
    assert len(await store.claim_digest(owner="dead", now=NOW, **options)) == 1  # type: ignore[arg-type]
    assert await store.claim_digest(owner="next", now=NOW + timedelta(seconds=60), **options) == []  # type: ignore[arg-type]
    later = {**options, "lease_until": NOW + timedelta(seconds=400)}
    claimed = await store.claim_digest(owner="next", now=NOW + timedelta(seconds=121), **later)  # type: ignore[arg-type]
    assert [n.notice_id for n in claimed] == [item.notice_id]


async def test_tables_of_an_earlier_build_are_refused_in_one_line(tmp_path: Path) -> None:
    earlier = Store(f"sqlite+aiosqlite:///{tmp_path / 'earlier.db'}")
    async with earlier.begin() as connection:
        await connection.execute(text("CREATE TABLE notify_digests (channel TEXT, platform TEXT, last_sent_at TEXT)"))
    with pytest.raises(SchemaTooNew, match=r"lack notify_digests\.retry_at, notify_digests\.in_flight_until"):
        await earlier.prepare()
    await earlier.dispose()
