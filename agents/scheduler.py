"""Leader-only timers: the expiry scan every SCAN_INTERVAL_SECONDS, and hourly housekeeping."""

from __future__ import annotations

import logging
from datetime import timedelta

from agents.context import WorkerContext
from agents.local import LocalRefreshes
from schemas import TokenExpiring
from stream_app.clock import utc_now
from stream_app.db.processed import forget_processed_before
from stream_app.scheduler import scan_expiring

log = logging.getLogger(__name__)


def attach(context: WorkerContext) -> None:
    local = LocalRefreshes(context.service.engine, max_in_flight=max(1, context.settings.max_refreshes_in_flight // 5))
    # A healthy broker acknowledges a page in milliseconds; one that has not within this is
    # down or restarting, and tokens due now cannot wait for it.
    broker_deadline = max(1.0, context.settings.scan_interval_seconds / 2)

    async def publish(events: list[TokenExpiring]) -> None:
        # The whole page queued at once, then every acknowledgement awaited (not one round trip per record).
        await context.publish_many("token.expiring", events)

    async def emit_many(events: list[TokenExpiring]) -> None:
        await local.publish_or_refresh_here(publish, events, deadline=broker_deadline)

    async def repeat_here(events: list[TokenExpiring]) -> None:
        log.info("Refreshing %d connection(s) whose earlier request was lost in this process", len(events))
        local.start(events, "lost_request")

    @context.app.timer(context.settings.scan_interval_seconds, on_leader=True, name="expiry_scan")
    async def expiry_scan() -> None:
        try:
            await scan_expiring(context.service.database, context.settings, emit_many, repeat_here=repeat_here)
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
