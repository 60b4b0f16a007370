"""Worker upkeep: store what a stopped process left in the token spool, and watch for circuits
that stay open past their cool-down (logged, and counted in /metrics and /readyz)."""

from __future__ import annotations

import logging

from agents.context import WorkerContext
from stream_app.metrics import CIRCUIT_STUCK

log = logging.getLogger(__name__)

UPKEEP_INTERVAL_SECONDS = 15.0


def attach(context: WorkerContext) -> None:
    engine = context.service.engine
    stuck_before: set[str] = set()

    @context.app.task
    async def at_start() -> None:
        try:
            await context.service.database.warm_up()
        except Exception as exc:  # the database is away: connections open on first use instead
            log.warning("Opening the database pool failed (%s)", type(exc).__name__)
        await _store_spooled_tokens()

    @context.app.timer(UPKEEP_INTERVAL_SECONDS, name="upkeep")
    async def upkeep() -> None:
        await _store_spooled_tokens()
        stuck = set(engine.stuck_circuits())
        for platform in stuck - stuck_before:
            log.error("Circuit of %s stays open past its cool-down: no refresh reaches it", platform)
        for platform in stuck | stuck_before:
            CIRCUIT_STUCK.labels(platform).set(1 if platform in stuck else 0)
        stuck_before.clear()
        stuck_before.update(stuck)

    async def _store_spooled_tokens() -> None:
        try:
            await engine.store_spooled_tokens()
        except Exception as exc:  # the database is away: the next round tries again
            log.warning("Storing spooled tokens failed (%s); will retry", type(exc).__name__)
