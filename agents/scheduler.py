"""Leader-only timers: the expiry scan every SCAN_INTERVAL_SECONDS, and hourly housekeeping
(forgetting old processed event ids, pruning published outbox events and the refresh rollup's
old hours), first run on the leader's first check after it starts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

from aiokafka.errors import KafkaError

from agents.context import WorkerContext
from agents.local import LocalRefreshes
from stream_app.clock import utc_now
from stream_app.db.engine import Database
from stream_app.db.outbox_retention import prune_published
from stream_app.db.processed import forget_processed_before
from stream_app.db.rollup import prune_rollup
from stream_app.metrics import LAST_SCAN_SUCCESS, OUTBOX_PRUNED
from stream_app.publisher import OutgoingRecord
from stream_app.scheduler import EmitPage, RequestPage, scan_requests
from stream_app.transient import is_transient

log = logging.getLogger(__name__)

SendMany = Callable[[Sequence[OutgoingRecord]], Awaitable[object]]

# Faust's timers sleep their interval before the first run: an hourly timer would never run on
# a leader that restarts more often than hourly. Housekeeping is checked every minute instead,
# and runs when it has not in the last hour in this process (so first about a minute in).
HOUSEKEEPING_INTERVAL_SECONDS = 3600.0
HOUSEKEEPING_CHECK_SECONDS = 60.0


class AtMostEvery:
    """Runs ``job`` when called, unless it is running or started less than ``interval`` seconds
    before in this process; the first call runs it. Returns whether it ran."""

    def __init__(
        self, interval: float, job: Callable[[], Awaitable[object]], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval
        self._job = job
        self._clock = clock
        self._started: float | None = None
        self._running = False

    async def __call__(self) -> bool:
        now = self._clock()
        if self._running or (self._started is not None and now - self._started < self._interval):
            return False
        self._started, self._running = now, True
        try:
            await self._job()
        finally:
            self._running = False
        return True


def attach(context: WorkerContext) -> None:
    local = LocalRefreshes(context.service.engine, max_in_flight=max(1, context.settings.max_refreshes_in_flight // 5))
    # A healthy broker acknowledges a page in milliseconds; one that has not within this is
    # down or restarting, and tokens due now cannot wait for it.
    broker_deadline = max(1.0, context.settings.scan_interval_seconds / 2)
    emit = publish_or_refresh_here(
        context.publisher.send_many, local, context.topic_names["token.expiring"], deadline=broker_deadline
    )

    async def repeat_here(page: RequestPage) -> None:
        log.info("Refreshing %d connection(s) whose earlier request was lost in this process", len(page))
        local.start(page.events(), "lost_request")

    @context.app.timer(context.settings.scan_interval_seconds, on_leader=True, name="expiry_scan")
    async def expiry_scan() -> None:
        try:
            await scan_requests(context.service.database, context.settings, emit, repeat_here=repeat_here)
            LAST_SCAN_SUCCESS.set_to_current_time()
        except Exception:
            # The next tick tries again; the refresh buffer absorbs a missed interval.
            log.exception("Expiry scan failed")

    database, settings = context.service.database, context.settings
    forget_due = AtMostEvery(
        HOUSEKEEPING_INTERVAL_SECONDS,
        lambda: forget_old_processed_events(database, settings.processed_event_retention_days),
    )
    prune_due = AtMostEvery(
        HOUSEKEEPING_INTERVAL_SECONDS, lambda: prune_published_outbox(database, settings.outbox_retention_hours)
    )
    prune_rollup_due = AtMostEvery(HOUSEKEEPING_INTERVAL_SECONDS, lambda: prune_old_rollup(database))

    @context.app.timer(HOUSEKEEPING_CHECK_SECONDS, on_leader=True, name="forget_processed_events")
    async def forget_processed_events() -> None:
        await forget_due()

    @context.app.timer(HOUSEKEEPING_CHECK_SECONDS, on_leader=True, name="prune_outbox")
    async def prune_outbox() -> None:
        await prune_due()

    @context.app.timer(HOUSEKEEPING_CHECK_SECONDS, on_leader=True, name="prune_refresh_rollup")
    async def prune_refresh_rollup() -> None:
        await prune_rollup_due()


async def forget_old_processed_events(database: Database, retention_days: float) -> None:
    """Forget processed event ids older than ``retention_days``. A failure is logged, never
    raised: the next hour tries again."""
    cutoff = utc_now() - timedelta(days=retention_days)
    try:
        async with database.transaction() as session:
            forgotten = await forget_processed_before(session, cutoff)
        log.info("Forgot %d processed event id(s) older than %s", forgotten, cutoff)
    except Exception:
        log.exception("Forgetting old processed event ids failed")


async def prune_published_outbox(database: Database, retention_hours: float) -> int:
    """Delete outbox events published more than ``retention_hours`` ago; how many went. A
    failure is logged, never raised: the next hour tries again (rows deleted before it count)."""
    cutoff = utc_now() - timedelta(hours=retention_hours)
    pruned = 0

    def count(chunk: int) -> None:
        nonlocal pruned
        pruned += chunk
        OUTBOX_PRUNED.inc(chunk)

    try:
        await prune_published(database, cutoff, on_chunk=count)
    except Exception:
        log.exception("Pruning published outbox events failed after %d row(s)", pruned)
    else:
        if pruned:
            log.info("Pruned %d outbox event(s) published before %s", pruned, cutoff)
    return pruned


async def prune_old_rollup(database: Database) -> None:
    """Delete the refresh rollup's hours past its retention. A failure is logged, never raised."""
    try:
        pruned = await prune_rollup(database, utc_now())
    except Exception:
        log.exception("Pruning the refresh rollup failed")
    else:
        if pruned:
            log.info("Pruned %d refresh rollup row(s)", pruned)


def publish_or_refresh_here(send_many: SendMany, local: LocalRefreshes, topic: str, *, deadline: float) -> EmitPage:
    """The scan's emit: a page's records queued at once and every acknowledgement awaited (not
    one round trip per record). If the broker has not taken them within ``deadline`` seconds,
    or refuses them for now, the page's connections are refreshed in this process instead;
    either way they count as requested. Request models are built only when the broker fails,
    not per row per scan."""

    async def emit(page: RequestPage) -> None:
        try:
            async with asyncio.timeout(deadline):
                await send_many(page.records(topic))
        except (TimeoutError, KafkaError) as exc:
            if not is_transient(exc):
                raise
            log.warning(
                "The broker did not take %d refresh request(s) (%s); refreshing them in this process",
                len(page),
                type(exc).__name__,
            )
            local.start(page.events(), "broker_unavailable")

    return emit
