"""Leader-only timers: the expiry scan every SCAN_INTERVAL_SECONDS, and hourly housekeeping."""

from __future__ import annotations

import logging
from datetime import timedelta

from agents.context import WorkerContext
from schemas import TokenExpiring
from stream_app.clock import utc_now
from stream_app.db.processed import forget_processed_before
from stream_app.scheduler import scan_expiring

log = logging.getLogger(__name__)


def attach(context: WorkerContext) -> None:
    async def emit_many(events: list[TokenExpiring]) -> None:
        # The whole page queued at once, then every acknowledgement awaited (not one round trip per record).
        await context.publish_many("token.expiring", events)

    @context.app.timer(context.settings.scan_interval_seconds, on_leader=True, name="expiry_scan")
    async def expiry_scan() -> None:
        try:
            await scan_expiring(context.service.database, context.settings, emit_many)
        except Exception:
            # The next tick tries again; the refresh buffer absorbs a missed interval.
            log.exception("Expiry scan failed")

    @context.app.timer(3600, on_leader=True, name="forget_processed_events")
    async def forget_processed_events() -> None:
        cutoff = utc_now() - timedelta(days=context.settings.processed_event_retention_days)
        try:
            async with context.service.database.transaction() as session:
                forgotten = await forget_processed_before(session, cutoff)
            log.info("Forgot %d processed event id(s) older than %s", forgotten, cutoff)
        except Exception:
            log.exception("Forgetting old processed event ids failed")
