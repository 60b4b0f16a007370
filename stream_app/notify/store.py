"""The notifier's store (SQLAlchemy Core; PostgreSQL, or SQLite for the demo).

``notify_deliveries`` holds one row per (notice_id, channel): the dedupe key, and the state of
its delivery. ``notify_announcements`` remembers which channel told of a connection's problem
(it tells of the recovery too), ``notify_digests`` when each (channel, platform) digest was last
sent. The tables are created by the notifier at start; ``notify_schema_version`` holds their
version, so a later notifier can upgrade them and an older one refuses a newer schema.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Uuid,
    and_,
    case,
    delete,
    func,
    inspect,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator

from stream_app.notify.notice import Notice
from stream_app.notify.recovery import Connection, Ledger, Problem

T = TypeVar("T")

SCHEMA_VERSION = 1
_IN_LIST = 500  # keys per IN list
_ROWS_PER_INSERT = 1000  # 15 parameters each: under both drivers' limit of 32767

# Delivery statuses. pending: waiting for its time; sending: claimed by a sender under a lease;
# sent; dead: dead-lettered; suppressed: by the re-auth rate limit; dropped: the connection
# recovered (or was revoked) before the problem was told.
PENDING, SENDING, SENT, DEAD, SUPPRESSED, DROPPED = "pending", "sending", "sent", "dead", "suppressed", "dropped"
FINISHED = (SENT, DEAD, SUPPRESSED, DROPPED)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend (SQLite keeps naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

deliveries = Table(
    "notify_deliveries",
    metadata,
    Column("notice_id", Uuid, primary_key=True),
    Column("channel", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("platform", String(64), nullable=False),
    Column("user_id", Uuid, nullable=True),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("event", JSON, nullable=False),
    Column("route", String(8), nullable=False),
    # A connection's problem (needs_reauth, refresh_failed that will not be retried): dropped
    # when the connection recovers before it is told, announced once told.
    Column("problem", Boolean, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("lease_until", UtcDateTime, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("last_error", String(500), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime, nullable=True),
    Index("notify_deliveries_due", "channel", "status", "next_attempt_at"),
    Index("notify_deliveries_connection", "user_id", "platform"),
    Index("notify_deliveries_created", "created_at"),
)

announcements = Table(
    "notify_announcements",
    metadata,
    Column("user_id", Uuid, primary_key=True),
    Column("platform", String(64), primary_key=True),
    Column("channel", String(64), primary_key=True),
    Column("notice_id", Uuid, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("problem_occurred_at", UtcDateTime, nullable=False),
    Column("announced_at", UtcDateTime, nullable=False),
)

# The latest event that showed a connection's earlier problems over (token.refreshed,
# connection.created, token.revoked): a problem event read later but older than it (another
# topic, read behind) is not told.
resolutions = Table(
    "notify_resolutions",
    metadata,
    Column("user_id", Uuid, primary_key=True),
    Column("platform", String(64), primary_key=True),
    Column("resolved_at", UtcDateTime, nullable=False),
)

digests = Table(
    "notify_digests",
    metadata,
    Column("channel", String(64), primary_key=True),
    Column("platform", String(64), primary_key=True),
    Column("last_sent_at", UtcDateTime, nullable=True),
    # After a failed digest: its next try (the notices wait here, not each on its own backoff,
    # so the retry gathers them all, with those that arrived meanwhile).
    Column("retry_at", UtcDateTime, nullable=True),
    # A digest being sent (by any notifier) until then: one at a time per (channel, platform).
    Column("in_flight_until", UtcDateTime, nullable=True),
)

# The workers whose circuit for a platform is open (provider.circuit_changed is per worker): a
# platform's outage begins when its first worker opens and ends when its last one closes.
circuits = Table(
    "notify_circuits",
    metadata,
    Column("platform", String(64), primary_key=True),
    Column("worker", String(200), primary_key=True),
    Column("opened_at", UtcDateTime, nullable=False),
)
# A worker that died with its circuit open never reports it closed: forgotten after this long.
CIRCUIT_FORGOTTEN_AFTER = timedelta(hours=6)

schema_versions = Table("notify_schema_version", metadata, Column("version", Integer, nullable=False))


class SchemaTooNew(Exception):
    """Tables this notifier cannot use (newer, or of an unreleased build): one line naming DATABASE_URL."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_notice(row: Any) -> Notice:
    return Notice(
        notice_id=row.notice_id,
        kind=row.kind,
        platform=row.platform,
        user_id=row.user_id,
        occurred_at=row.occurred_at,
        event=row.event,
    )


class Store:
    def __init__(self, url: str) -> None:
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        # SQLite: one writer at a time; a writer waits for the other rather than failing.
        options: dict[str, Any] = {"connect_args": {"timeout": 30}} if self.is_sqlite else {"pool_pre_ping": True}
        self.engine: AsyncEngine = create_async_engine(url, **options)

    async def prepare(self) -> None:
        """Create the tables (or check they are of this version): at the notifier's start."""
        async with self.engine.begin() as connection:
            if not self.is_sqlite:  # notifiers starting together: one creates, the others wait
                await connection.execute(text("SELECT pg_advisory_xact_lock(7395021462)"))
            await connection.run_sync(metadata.create_all)
            missing = await connection.run_sync(_missing_columns)
            if missing:
                raise SchemaTooNew(
                    f"DATABASE_URL: the notifier's tables lack {', '.join(missing)} (made by an earlier build of "
                    f"schema version {SCHEMA_VERSION}); drop the notify_* tables, the notifier makes them again"
                )
            found = (await connection.execute(select(func.max(schema_versions.c.version)))).scalar()
            if found is None:
                await connection.execute(schema_versions.insert().values(version=SCHEMA_VERSION))
            elif found > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"DATABASE_URL: the notifier's tables are at schema version {found}, newer than this "
                    f"notifier's {SCHEMA_VERSION}; run a newer notifier"
                )

    async def dispose(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.begin() as connection:
            yield connection

    def _insert(self, table: Table) -> Any:
        return (sqlite.insert if self.is_sqlite else postgresql.insert)(table)

    # ---- intake (inside the batch's transaction) ----

    async def insert_deliveries(
        self, connection: AsyncConnection, rows: Sequence[dict[str, Any]]
    ) -> set[tuple[uuid.UUID, str]]:
        """Insert the rows whose key is new; returns the keys inserted (the others: duplicates)."""
        inserted: set[tuple[uuid.UUID, str]] = set()
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            statement = (
                self._insert(deliveries)
                .values(list(rows[start : start + _ROWS_PER_INSERT]))
                .on_conflict_do_nothing(index_elements=["notice_id", "channel"])
                .returning(deliveries.c.notice_id, deliveries.c.channel)
            )
            inserted.update((row.notice_id, row.channel) for row in await connection.execute(statement))
        return inserted

    async def circuit_changed(
        self, connection: AsyncConnection, *, platform: str, worker: str, opened: bool, at: datetime
    ) -> bool:
        """Record one worker's circuit opening or closing at ``at``; True when that changes the
        platform as a whole: no other worker's circuit for it is open (recently enough)."""
        others_open = (
            await connection.execute(
                select(func.count())
                .select_from(circuits)
                .where(
                    circuits.c.platform == platform,
                    circuits.c.worker != worker,
                    circuits.c.opened_at > at - CIRCUIT_FORGOTTEN_AFTER,
                )
            )
        ).scalar_one()
        if opened:
            statement = self._insert(circuits).values(platform=platform, worker=worker, opened_at=at)
            await connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["platform", "worker"], set_={"opened_at": statement.excluded.opened_at}
                )
            )
        else:
            await connection.execute(
                delete(circuits).where(circuits.c.platform == platform, circuits.c.worker == worker)
            )
        return bool(others_open == 0)

    async def load_ledger(
        self, connection: AsyncConnection, connections: set[Connection], reauths: tuple[datetime, datetime] | None
    ) -> Ledger:
        """What the store knows of ``connections``: their unfinished problems, their announcements,
        and (when ``reauths`` is given) their needs_reauth deliveries told or to be told in it."""
        ledger = Ledger()
        keys = sorted(connections, key=lambda key: (str(key[0]), key[1]))
        for start in range(0, len(keys), _IN_LIST):
            chunk = keys[start : start + _IN_LIST]
            of_them = tuple_(deliveries.c.user_id, deliveries.c.platform).in_(chunk)
            problems = await connection.execute(
                select(deliveries).where(
                    of_them, deliveries.c.problem.is_(True), deliveries.c.status.in_((PENDING, SENDING))
                )
            )
            for row in problems:
                ledger.problems[(row.user_id, row.platform)].append(
                    Problem(row.notice_id, row.channel, row.kind, row.occurred_at, row.status)
                )
            told = await connection.execute(
                select(announcements).where(tuple_(announcements.c.user_id, announcements.c.platform).in_(chunk))
            )
            for row in told:
                ledger.announced[(row.user_id, row.platform)][row.channel] = row.problem_occurred_at
            resolved = await connection.execute(
                select(resolutions).where(tuple_(resolutions.c.user_id, resolutions.c.platform).in_(chunk))
            )
            for row in resolved:
                ledger.resolved[(row.user_id, row.platform)] = row.resolved_at
            if reauths is not None:
                recent = await connection.execute(
                    select(
                        deliveries.c.user_id, deliveries.c.platform, deliveries.c.channel, deliveries.c.occurred_at
                    ).where(
                        of_them,
                        deliveries.c.kind == "needs_reauth",
                        deliveries.c.status.in_((PENDING, SENDING, SENT)),
                        deliveries.c.occurred_at > reauths[0],
                        deliveries.c.occurred_at < reauths[1],
                    )
                )
                for row in recent:
                    ledger.reauths[((row.user_id, row.platform), row.channel)].append(row.occurred_at)
        return ledger

    async def write_ledger(self, connection: AsyncConnection, ledger: Ledger) -> list[str]:
        """Drop the stored problems the batch dropped (those still pending), forget the
        announcements of recovered or revoked connections; returns the dropped ones' channels."""
        dropped: list[str] = []
        for start in range(0, len(ledger.drop_stored), _IN_LIST):
            chunk = ledger.drop_stored[start : start + _IN_LIST]
            result = await connection.execute(
                update(deliveries)
                .where(tuple_(deliveries.c.notice_id, deliveries.c.channel).in_(chunk), deliveries.c.status == PENDING)
                .values(status=DROPPED, last_error="the connection recovered or was revoked first")
                .returning(deliveries.c.channel)
            )
            dropped.extend(row.channel for row in result)
        newly = sorted(ledger.newly_resolved.items(), key=lambda item: (str(item[0][0]), item[0][1]))
        for start in range(0, len(newly), _IN_LIST):
            values = [
                {"user_id": user_id, "platform": platform, "resolved_at": at}
                for (user_id, platform), at in newly[start : start + _IN_LIST]
            ]
            statement = self._insert(resolutions).values(values)
            later = statement.excluded.resolved_at > resolutions.c.resolved_at
            await connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["user_id", "platform"],
                    set_={
                        "resolved_at": case((later, statement.excluded.resolved_at), else_=resolutions.c.resolved_at)
                    },
                )
            )
        for user_id, platform, before in ledger.forget:
            await connection.execute(
                delete(announcements).where(
                    announcements.c.user_id == user_id,
                    announcements.c.platform == platform,
                    announcements.c.problem_occurred_at <= before,
                )
            )
        return dropped

    # ---- dispatch ----

    async def claim_due(
        self, *, channel: str, limit: int, owner: str, now: datetime, lease_until: datetime
    ) -> list[Notice]:
        """Up to ``limit`` due single deliveries of ``channel`` (pending and due, or sending with
        a lapsed lease), now held by ``owner`` until ``lease_until``."""
        async with self.engine.begin() as connection:
            keys = (
                await connection.execute(
                    select(deliveries.c.notice_id, deliveries.c.channel)
                    .where(deliveries.c.channel == channel, deliveries.c.route == "now", _due(now))
                    .order_by(deliveries.c.next_attempt_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            claimed: list[Notice] = []
            for chunk in _chunks([key.notice_id for key in keys]):
                rows = await connection.execute(
                    update(deliveries)
                    .where(deliveries.c.channel == channel, deliveries.c.notice_id.in_(chunk))
                    .values(status=SENDING, lease_owner=owner, lease_until=lease_until)
                    .returning(*deliveries.c)
                )
                claimed.extend(to_notice(row) for row in rows)
            return sorted(claimed, key=lambda notice: notice.occurred_at)

    async def digest_platforms_due(self, *, channel: str, now: datetime, window_seconds: float) -> list[str]:
        """Platforms with digest deliveries due on ``channel`` whose last digest is older than
        the window and whose failed digest (if any) is due again."""
        async with self.engine.connect() as connection:
            platforms = (
                await connection.execute(
                    select(deliveries.c.platform)
                    .where(deliveries.c.channel == channel, deliveries.c.route == "digest", _due(now))
                    .distinct()
                )
            ).scalars()
            states = {
                row.platform: row
                for row in await connection.execute(select(digests).where(digests.c.channel == channel))
            }
        return [platform for platform in platforms if _digest_due(states.get(platform), now, window_seconds)]

    async def claim_digest(
        self,
        *,
        channel: str,
        platform: str,
        owner: str,
        now: datetime,
        lease_until: datetime,
        window_seconds: float,
    ) -> list[Notice]:
        """Every due digest delivery of (channel, platform), held by ``owner``, oldest first; none
        while another digest of it is in flight or its window or retry has not come (checked
        under the digest's row lock, so notifiers side by side send one at a time)."""
        async with self.engine.begin() as connection:
            await connection.execute(
                self._insert(digests).values(channel=channel, platform=platform).on_conflict_do_nothing()
            )
            state = (
                await connection.execute(
                    select(digests)
                    .where(digests.c.channel == channel, digests.c.platform == platform)
                    .with_for_update()
                )
            ).one()
            if not _digest_due(state, now, window_seconds):
                return []
            # Under the digest's row lock no other notifier claims this platform's digest: its due
            # deliveries are taken by their criteria, however many (no list of keys to bound).
            rows = (
                await connection.execute(
                    update(deliveries)
                    .where(
                        deliveries.c.channel == channel,
                        deliveries.c.platform == platform,
                        deliveries.c.route == "digest",
                        _due(now),
                    )
                    .values(status=SENDING, lease_owner=owner, lease_until=lease_until)
                    .returning(*deliveries.c)
                )
            ).all()
            if not rows:
                return []
            await connection.execute(
                update(digests)
                .where(digests.c.channel == channel, digests.c.platform == platform)
                .values(in_flight_until=lease_until)
            )
            return sorted((to_notice(row) for row in rows), key=lambda notice: notice.occurred_at)

    async def mark_sent(self, notices: Sequence[Notice], *, channel: str, owner: str, now: datetime) -> int:
        """The held deliveries were sent; problems become announcements (unless the connection
        recovered meanwhile). Returns how many were still held by ``owner``."""
        async with self.engine.begin() as connection:
            rows: list[Any] = []
            for chunk in _chunks(notices):
                result = await connection.execute(
                    update(deliveries)
                    .where(_held(chunk, channel, owner))
                    .values(status=SENT, sent_at=now, lease_until=None, lease_owner=None, last_error=None)
                    .returning(
                        deliveries.c.notice_id,
                        deliveries.c.kind,
                        deliveries.c.problem,
                        deliveries.c.user_id,
                        deliveries.c.platform,
                        deliveries.c.occurred_at,
                    )
                )
                rows.extend(result.all())
            problems = [row for row in rows if row.problem and row.user_id is not None]
            await self._announce(connection, problems, channel=channel, now=now)
            return len(rows)

    async def _announce(
        self, connection: AsyncConnection, problems: Sequence[Any], *, channel: str, now: datetime
    ) -> None:
        """The problems sent become their connections' announcements, in a few statements however
        many there are (a digest tells thousands): those whose connection was shown over since (its
        recovery told or being told, a recovery or disconnect read while it was sent) are not."""
        latest: dict[tuple[Any, str], Any] = {}
        for row in problems:  # one announcement per connection: its latest problem
            key = (row.user_id, row.platform)
            if key not in latest or row.occurred_at > latest[key].occurred_at:
                latest[key] = row
        # The latest event that showed each connection over (a recovery, told or being told, or a
        # disconnect; read while the problem was being sent): a problem from before is not
        # announced, so a later re-connection owes no "recovered" for it.
        shown_over: dict[tuple[Any, str], datetime] = {}
        for chunk in _chunks(list({user_id for user_id, _ in latest})):
            result = await connection.execute(
                select(resolutions.c.user_id, resolutions.c.platform, resolutions.c.resolved_at).where(
                    resolutions.c.user_id.in_(chunk)
                )
            )
            shown_over |= {(user_id, platform): moment for user_id, platform, moment in result.all()}
        values = [
            {
                "user_id": row.user_id,
                "platform": row.platform,
                "channel": channel,
                "notice_id": row.notice_id,
                "kind": row.kind,
                "problem_occurred_at": row.occurred_at,
                "announced_at": now,
            }
            for key, row in latest.items()
            if key not in shown_over or shown_over[key] < row.occurred_at
        ]
        for chunk in _chunks(values):
            statement = self._insert(announcements).values(list(chunk))
            await connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["user_id", "platform", "channel"],
                    set_={
                        key: statement.excluded[key]
                        for key in ("notice_id", "kind", "problem_occurred_at", "announced_at")
                    },
                )
            )

    async def record_digest(
        self, *, channel: str, platform: str, sent_at: datetime | None, retry_at: datetime | None
    ) -> None:
        """A digest was sent (``sent_at``), or failed and is tried again at ``retry_at``."""
        values: dict[str, Any] = {"retry_at": retry_at, "in_flight_until": None}
        if sent_at is not None:
            values["last_sent_at"] = sent_at
        async with self.engine.begin() as connection:
            statement = self._insert(digests).values(channel=channel, platform=platform, **values)
            await connection.execute(
                statement.on_conflict_do_update(index_elements=["channel", "platform"], set_=values)
            )

    async def renew(self, notices: Sequence[Notice], *, channel: str, owner: str, lease_until: datetime) -> int:
        """Extend the lease of held deliveries (just before their send); returns how many are
        still held by ``owner`` (a queued one whose lease lapsed may have been taken by another)."""
        return await self._update_held(notices, channel, owner, lease_until=lease_until)

    async def reschedule(
        self, notices: Sequence[Notice], *, channel: str, owner: str, next_attempt_at: datetime, error: str
    ) -> None:
        await self._update_held(
            notices, channel, owner, status=PENDING, next_attempt_at=next_attempt_at, **_failed_attempt(error)
        )

    async def mark_dead(self, notices: Sequence[Notice], *, channel: str, owner: str, error: str) -> None:
        await self._update_held(notices, channel, owner, status=DEAD, **_failed_attempt(error))

    async def release(self, notices: Sequence[Notice], *, channel: str, owner: str) -> None:
        """Held deliveries that were not sent (a stop): pending again, at once for another."""
        if notices:
            await self._update_held(notices, channel, owner, status=PENDING, lease_until=None, lease_owner=None)

    async def _update_held(self, notices: Sequence[Notice], channel: str, owner: str, **values: Any) -> int:
        """Set ``values`` on the deliveries of ``notices`` still held by ``owner``; how many were."""
        held = 0
        async with self.engine.begin() as connection:
            for chunk in _chunks(notices):
                result = await connection.execute(
                    update(deliveries).where(_held(chunk, channel, owner)).values(**values)
                )
                held += int(result.rowcount)
        return held

    async def attempts_and_age(self, notices: Sequence[Notice], *, channel: str) -> tuple[int, datetime]:
        """The most attempts and the earliest intake among ``notices``."""
        attempts, earliest = 0, None
        async with self.engine.connect() as connection:
            for chunk in _chunks(notices):
                most, first = (
                    await connection.execute(
                        select(func.max(deliveries.c.attempts), func.min(deliveries.c.created_at)).where(
                            deliveries.c.channel == channel,
                            deliveries.c.notice_id.in_([notice.notice_id for notice in chunk]),
                        )
                    )
                ).one()
                attempts = max(attempts, int(most or 0))
                if first is not None and (earliest is None or first < earliest):
                    earliest = first
        return attempts, earliest or utc_now()

    async def pending_counts(self) -> dict[str, int]:
        """Deliveries not finished yet, per channel."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                select(deliveries.c.channel, func.count())
                .where(deliveries.c.status.in_((PENDING, SENDING)))
                .group_by(deliveries.c.channel)
            )
            return {channel: int(count) for channel, count in rows}

    async def prune(self, *, before: datetime, limit: int = 10_000) -> int:
        """Delete up to ``limit`` finished deliveries taken in before ``before``, and the
        resolutions from before it; returns how many rows went."""
        async with self.engine.begin() as connection:
            keys = (
                await connection.execute(
                    select(deliveries.c.notice_id, deliveries.c.channel)
                    .where(deliveries.c.status.in_(FINISHED), deliveries.c.created_at < before)
                    .limit(limit)
                )
            ).all()
            if not keys:
                return 0
            for chunk in _chunks([tuple(key) for key in keys]):
                await connection.execute(
                    delete(deliveries).where(tuple_(deliveries.c.notice_id, deliveries.c.channel).in_(chunk))
                )
            resolved = await connection.execute(delete(resolutions).where(resolutions.c.resolved_at < before))
            return len(keys) + int(resolved.rowcount)


def _missing_columns(connection: Any) -> list[str]:
    inspector = inspect(connection)
    missing: list[str] = []
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        missing.extend(f"{table.name}.{column.name}" for column in table.columns if column.name not in present)
    return missing


def _digest_due(state: Any, now: datetime, window_seconds: float) -> bool:
    """A (channel, platform) digest may go: none in flight, its retry (if any) has come, and its
    last one is a window old."""
    if state is None:
        return True
    for moment in (state.in_flight_until, state.retry_at):
        if moment is not None and moment > now:
            return False
    return state.last_sent_at is None or (now - state.last_sent_at).total_seconds() >= window_seconds


def _due(now: datetime) -> Any:
    return or_(
        and_(deliveries.c.status == PENDING, deliveries.c.next_attempt_at <= now),
        and_(deliveries.c.status == SENDING, deliveries.c.lease_until < now),
    )


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """``items`` in slices short enough for an IN list (Postgres refuses very long lists of
    row values; asyncpg takes at most 32,767 parameters)."""
    for start in range(0, len(items), _IN_LIST):
        yield items[start : start + _IN_LIST]


def _failed_attempt(error: str) -> dict[str, Any]:
    """A held delivery's failed attempt: counted, its lease given up, the error kept (bounded)."""
    return {"attempts": deliveries.c.attempts + 1, "lease_until": None, "lease_owner": None, "last_error": error[:500]}


def _held(notices: Sequence[Notice], channel: str, owner: str) -> Any:
    return and_(
        deliveries.c.channel == channel,
        deliveries.c.notice_id.in_([notice.notice_id for notice in notices]),
        deliveries.c.status == SENDING,
        deliveries.c.lease_owner == owner,
    )
