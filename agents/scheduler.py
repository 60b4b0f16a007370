"""The leader-only expiry scan, every SCAN_INTERVAL_SECONDS."""

from __future__ import annotations

import logging

from agents.context import WorkerContext
from schemas import TokenExpiring
from stream_app.scheduler import scan_expiring

log = logging.getLogger(__name__)


def attach(context: WorkerContext) -> None:
    async def emit(event: TokenExpiring) -> None:
        await context.publish("token.expiring", event)

    @context.app.timer(context.settings.scan_interval_seconds, on_leader=True, name="expiry_scan")
    async def expiry_scan() -> None:
        try:
            await scan_expiring(context.service.database, context.settings, emit)
        except Exception:
            # The next tick tries again; the refresh buffer absorbs a missed interval.
            log.exception("Expiry scan failed")
