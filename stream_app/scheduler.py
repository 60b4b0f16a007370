"""The expiry scan: finds connections due for a refresh and requests one for each.

It pages with a keyset cursor over the refresh_due index (never loading the table) and marks
each emitted row with ``refresh_requested_at``, so the next scan skips work in flight
unless it has been pending for longer than ``requeue_after`` (a lost request). A page is
emitted at once (sent without waiting record by record) and marked, in the transaction that
read it, only once every one of its records was acknowledged.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from schemas import TokenExpiring
from stream_app.catalog import REFRESHABLE_PLATFORMS
from stream_app.clock import to_aware_utc, utc_now
from stream_app.db import ConnectionRow, Database
from stream_app.db.connections import due_connections, mark_refresh_requested
from stream_app.metrics import EXPIRING_SOON
from stream_app.settings import Settings

log = logging.getLogger(__name__)

# Emits one page of requests and returns once every one of them was delivered; raises if any
# was not (the page then stays unmarked and is emitted again by the next scan).
EmitMany = Callable[[list[TokenExpiring]], Awaitable[object]]


async def scan_expiring(
    database: Database, settings: Settings, emit_many: EmitMany, *, repeat_here: EmitMany | None = None
) -> int:
    """Emit one ``token.expiring`` per due connection; returns how many were emitted.

    A request sent before and not done since was presumably lost (its worker died with it, the
    broker was away): given ``repeat_here``, its repeat goes there instead (the scanning
    process refreshes it itself) rather than through the topic again."""
    now = utc_now()
    # Due within one interval: the next scan would be too late for them.
    due_by = now + timedelta(seconds=settings.scan_interval_seconds)
    # A request not done after half the buffer is presumed lost and sent again, early enough
    # to still beat the expiry; duplicates are harmless (the engine re-decides under a lease).
    requested_before = now - timedelta(seconds=settings.refresh_buffer_seconds / 2)
    emitted = 0
    cursor: tuple[datetime, uuid.UUID] | None = None
    while True:
        async with database.transaction() as session:
            rows = await due_connections(
                session,
                due_by=due_by,
                requested_before=requested_before,
                after=cursor,
                limit=settings.scan_page_size,
                platforms=REFRESHABLE_PLATFORMS,
            )
            if not rows:
                break
            repeated = repeat_here is not None
            repeats = [row for row in rows if repeated and row.refresh_requested_at is not None]
            first = [row for row in rows if not repeated or row.refresh_requested_at is None]
            if first:
                await emit_many([_request(row) for row in first])
            if repeats and repeat_here is not None:
                await repeat_here([_request(row) for row in repeats])
            await mark_refresh_requested(session, [row.id for row in rows], now)
        emitted += len(rows)
        if len(rows) < settings.scan_page_size:
            break
        last = rows[-1]
        if last.refresh_due_at is None:  # excluded by the query; keeps the cursor's type exact
            break
        cursor = (last.refresh_due_at, last.id)
    EXPIRING_SOON.set(emitted)
    log.log(
        logging.INFO if emitted else logging.DEBUG,
        "⏰ [Scheduled] Expiry scan emitted %d refresh request(s)",
        emitted,
    )
    return emitted


def _request(row: ConnectionRow) -> TokenExpiring:
    return TokenExpiring(
        user_id=row.user_id,
        platform=row.platform,
        token_expires_at=to_aware_utc(row.token_expires_at),
        reason="scheduled",
    )
