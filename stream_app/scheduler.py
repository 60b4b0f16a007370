"""The expiry scan: finds connections due for a refresh and requests one for each.

It pages with a keyset cursor over the refresh_due index (never loading the table) and marks
each emitted row with ``refresh_requested_at``, so the next scan skips work in flight unless
it has been pending for longer than half the buffer (a lost request). Each page is claimed
(read, locked and marked: ``stream_app.db.scan``; two scans at once never claim the same
row) in a transaction of its own that is committed at once, then emitted (sent without
waiting record by record). No row lock is held while the broker acknowledges: a refresh, a
batch of them or an ingest touching the page's rows would wait for it, up to the broker
deadline. A page whose delivery failed gets its marks back (``give_back_marks``), so the
next scan sends it again. The next page is claimed while the previous one is being
delivered (``PAGES_IN_FLIGHT``).

Marked but never sent: a scanning process that dies (or whose give-back fails) between the
commit and the broker's acknowledgement leaves marks without requests. Those are lost
requests like any other (a worker that died with a request in hand): no scan asks again for
half a buffer (their requests may still be in flight), then the first scan after that,
whichever worker leads by then, refreshes them in its own process (``repeat_here``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from schemas import TokenExpiring
from stream_app.catalog import REFRESHABLE_PLATFORMS
from stream_app.clock import utc_now
from stream_app.db import Database
from stream_app.db.scan import Cursor, DueConnection, claim_due_page, give_back_marks
from stream_app.metrics import EXPIRING_SOON
from stream_app.publisher import OutgoingRecord
from stream_app.settings import Settings

log = logging.getLogger(__name__)

# Pages being delivered while the next one is claimed: the database reads and marks while the
# broker acknowledges.
PAGES_IN_FLIGHT = 2


class RequestPage:
    """The ``token.expiring`` requests of one page of due connections, as records to send
    (``records``) or as models (``events``): the same events either way, byte for byte."""

    def __init__(self, rows: list[DueConnection], occurred_at: datetime) -> None:
        self.rows = rows
        self.occurred_at = occurred_at
        self._event_ids = _random_uuid_texts(len(rows))

    def __len__(self) -> int:
        return len(self.rows)

    def records(self, topic: str) -> list[OutgoingRecord]:
        """What ``[OutgoingRecord(topic, e.key.encode(), e.to_bytes()) for e in self.events()]``
        is, without building a model per row (pydantic's validation and serializer were most
        of the scan's work per row). No string here needs JSON escaping: ids are UUIDs, the
        platform a catalog key (``[a-z][a-z0-9_]*``), times ISO 8601."""
        occurred_at = _utc_text(self.occurred_at)
        records = []
        for event_id, row in zip(self._event_ids, self.rows, strict=True):
            user_id = str(row.user_id)
            expires = _published_expiry(row.token_expires_at)
            expires_text = "null" if expires is None else f'"{_utc_text(expires)}"'
            value = (
                f'{{"event_id":"{event_id}","event_type":"token.expiring","schema_version":1,'
                f'"occurred_at":"{occurred_at}","user_id":"{user_id}","platform":"{row.platform}",'
                f'"token_expires_at":{expires_text},"reason":"scheduled"}}'
            )
            records.append(OutgoingRecord(topic, f"{user_id}:{row.platform}".encode(), value.encode()))
        return records

    def events(self) -> list[TokenExpiring]:
        return [
            TokenExpiring(
                event_id=uuid.UUID(event_id),
                occurred_at=self.occurred_at,
                user_id=row.user_id,
                platform=row.platform,
                token_expires_at=_published_expiry(row.token_expires_at),
                reason="scheduled",
            )
            for event_id, row in zip(self._event_ids, self.rows, strict=True)
        ]


# What a request may say of an expiry: the events' timestamps stay within these (schemas).
_EARLIEST_PUBLISHED = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST_PUBLISHED = datetime(2200, 1, 1, tzinfo=UTC)


def _published_expiry(stored: datetime | None) -> datetime | None:
    """The stored expiry (naive UTC) as a request carries it; none for a value no event may
    carry (a row edited by hand to year 1, say): the request is informational there, the
    refresh decides from the row, and one such row must not fail the scan's page."""
    if stored is None:
        return None
    expiry = stored.replace(tzinfo=UTC)
    return expiry if _EARLIEST_PUBLISHED <= expiry < _LATEST_PUBLISHED else None


# Emits one page of requests and returns once every one of them was delivered; raises if any
# was not (the page then stays unmarked and is emitted again by the next scan).
EmitPage = Callable[[RequestPage], Awaitable[object]]
EmitMany = Callable[[list[TokenExpiring]], Awaitable[object]]


async def scan_expiring(
    database: Database, settings: Settings, emit_many: EmitMany, *, repeat_here: EmitMany | None = None
) -> int:
    """``scan_requests`` with each page handed over as ``TokenExpiring`` models."""

    async def emit(page: RequestPage) -> None:
        await emit_many(page.events())

    async def repeat(page: RequestPage) -> None:
        if repeat_here is not None:
            await repeat_here(page.events())

    return await scan_requests(database, settings, emit, repeat_here=repeat if repeat_here is not None else None)


async def scan_requests(
    database: Database, settings: Settings, emit: EmitPage, *, repeat_here: EmitPage | None = None
) -> int:
    """Emit one ``token.expiring`` per due connection, a page at a time; returns how many.

    A request sent before and not done since was presumably lost (its worker died with it, the
    broker was away): given ``repeat_here``, its repeat goes there instead (the scanning
    process refreshes it itself) rather than through the topic again."""
    now = utc_now()
    # Due within one interval: the next scan would be too late for them.
    due_by = now + timedelta(seconds=settings.scan_interval_seconds)
    # A request not done after half the buffer is presumed lost and sent again, early enough
    # to still beat the expiry; duplicates are harmless (the engine re-decides under a lease).
    requested_before = now - timedelta(seconds=settings.refresh_buffer_seconds / 2)
    page_size = settings.scan_page_size

    async def claim(session: AsyncSession, cursor: Cursor | None) -> list[DueConnection]:
        return await claim_due_page(
            session,
            due_by=due_by,
            requested_before=requested_before,
            after=cursor,
            limit=page_size,
            platforms=REFRESHABLE_PLATFORMS,
            now=now,
        )

    async def deliver(rows: list[DueConnection]) -> None:
        occurred_at = datetime.now(UTC)
        if repeat_here is None:
            await emit(RequestPage(rows, occurred_at))
            return
        first = [row for row in rows if row.requested_at is None]
        repeats = [row for row in rows if row.requested_at is not None]
        if first:
            await emit(RequestPage(first, occurred_at))
        if repeats:
            await repeat_here(RequestPage(repeats, occurred_at))

    # SQLite has one writer at a time: a failed page's give-back must not race the next claim.
    emitted = await _scan_pages(
        database,
        page_size,
        claim,
        deliver,
        marked=now,
        pages_in_flight=1 if database.is_sqlite else PAGES_IN_FLIGHT,
    )
    log.log(
        logging.INFO if emitted else logging.DEBUG,
        "⏰ [Scheduled] Expiry scan emitted %d refresh request(s)",
        emitted,
    )
    return emitted


async def _scan_pages(
    database: Database,
    page_size: int,
    claim: Callable[[AsyncSession, Cursor | None], Awaitable[list[DueConnection]]],
    deliver: Callable[[list[DueConnection]], Awaitable[None]],
    *,
    marked: datetime,
    pages_in_flight: int,
) -> int:
    """Claim page after page, each committed in a transaction of its own, and deliver each in
    a task of its own while the next pages are claimed and delivered. The first failure stops
    the scan and is raised, once every page already claimed has been settled."""
    emitted = 0
    cursor: Cursor | None = None
    pages: deque[asyncio.Task[int]] = deque()
    try:
        while True:
            while pages and (len(pages) >= pages_in_flight or pages[0].done()):
                emitted += await pages.popleft()
            async with database.transaction() as session:
                rows = await claim(session, cursor)
            if not rows:
                break
            pages.append(asyncio.ensure_future(_delivered_or_given_back(database, rows, deliver(rows), marked)))
            if len(rows) < page_size:
                break
            cursor = Cursor(rows[-1].refresh_due_at, rows[-1].id)
        while pages:
            emitted += await pages.popleft()
    except BaseException:
        for page in pages:  # a page delivered whole stays marked, one that was not is given back
            with contextlib.suppress(BaseException):
                emitted += await page
        raise
    finally:
        EXPIRING_SOON.set(emitted)
    return emitted


async def _delivered_or_given_back(
    database: Database, rows: list[DueConnection], delivery: Awaitable[None], marked: datetime
) -> int:
    """Wait for the page's delivery; if it failed, give its marks back and raise its error."""
    try:
        await delivery
    except BaseException:
        try:
            async with database.transaction() as session:
                await give_back_marks(session, rows, marked)
        except Exception as exc:
            log.warning(
                "The marks of %d undelivered refresh request(s) could not be given back (%s); "
                "the scan repeats them once they count as lost",
                len(rows),
                type(exc).__name__,
            )
        raise
    return len(rows)


def _utc_text(moment: datetime) -> str:
    """A naive-UTC or aware time as pydantic writes it: isoformat() in UTC with "Z" (and, like
    isoformat(), no fraction when the microseconds are 0)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat() + "Z"


def _random_uuid_texts(count: int) -> list[str]:
    """``count`` random (version 4) UUIDs as text, from one read of the system's randomness
    (``str(uuid.uuid4())`` costs a system call and a Python object each)."""
    raw = bytearray(os.urandom(16 * count))
    texts = []
    for start in range(0, 16 * count, 16):
        raw[start + 6] = (raw[start + 6] & 0x0F) | 0x40  # version 4
        raw[start + 8] = (raw[start + 8] & 0x3F) | 0x80  # RFC 4122 variant
        hexed = raw[start : start + 16].hex()
        texts.append(f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}")
    return texts
