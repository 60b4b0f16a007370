"""Running bulk refresh jobs inside a worker.

A runner claims one job at a time (oldest first; a running job only once its runner's lease
has lapsed), walks each selected platform's matching connections by id (a keyset cursor),
and refreshes each in-process through the engine at the job's rate per platform, a few at a
time. Progress, counts and the cursor are saved, and the lease renewed, every
BULK_REFRESH_SAVE_INTERVAL_SECONDS; a cancel is seen there and stops the walk before the
next connection. A runner that dies is replaced once its lease lapses, from the saved cursor.

Each page's ids are saved before any of them is refreshed, so a resumed run meets again
exactly the connections the last run may have handled after its last save, even those that
no longer match (an `error` row it refreshed is `connected` now). Each connection is checked
just before its refresh: one refreshed since the job was created, or that no longer matches,
is counted as such and not refreshed again. A repeat racing another refresher still meets
the engine's lease (it waits, then finds the token fresh)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, case, select

from schemas import RefreshReason
from stream_app.bulk import store
from stream_app.bulk.models import JobStatus
from stream_app.bulk.settings import BulkSettings
from stream_app.bulk.store import ClaimedJob, LeaseLostError
from stream_app.db import Database
from stream_app.db.models import ConnectionRow
from stream_app.engine import RefreshResult

log = logging.getLogger(__name__)

# The engine's forced refresh, as `token-refresh refresh` and the API's manual refresh: it
# refreshes whatever the expiry, overrides a backoff hold and retries an `error` row (what a
# bulk job is for: recovering a platform's rows after its client secret was fixed). The
# contract's "bulk" reason is, for the engine, a scheduled request (due tokens only, `error`
# rows skipped), so published events of bulk jobs say "manual".
BULK_TRIGGER: RefreshReason = "manual"
# Outcomes a job counts besides the engine's (refreshed, needs_reauth, failed, deferred, skipped).
ALREADY_REFRESHED = "already_refreshed"
NO_LONGER_SELECTED = "no_longer_selected"
WOULD_REFRESH = "would_refresh"
MAX_RETRY_DELAY_SECONDS = 60.0

Refresh = Callable[[uuid.UUID, str], Awaitable[RefreshResult]]


class Pacer:
    """Starts at most ``rate`` per second, evenly spaced."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None

    async def wait(self, stop: asyncio.Event | None = None) -> None:
        """Until the next start is due, or ``stop`` is set (a cancel must not wait for a slow rate)."""
        now = self._clock()
        start = now if self._next is None else max(now, self._next)
        self._next = start + self._interval
        if start <= now:
            return
        if stop is None:
            await self._sleep(start - now)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), start - now)


@dataclass
class Progress:
    """Outcomes are counted, and the cursor moved, in id order per platform: what is saved is
    exactly the connections up to the cursor, so a resumed run neither skips nor counts twice."""

    done: int
    counts: dict[str, int]
    cursor: dict[str, str]  # platform -> id up to which every selected row is handled
    pages: dict[str, list[str]]  # platform -> ids of the page being handled
    _pending: dict[str, deque[list[Any]]] = field(default_factory=dict)

    def done_through(self, platform: str) -> uuid.UUID | None:
        value = self.cursor.get(platform)
        return uuid.UUID(value) if value else None

    def carried_page(self, platform: str) -> list[uuid.UUID]:
        """The ids of the page a previous run was handling, beyond what it saved as done."""
        after = self.done_through(platform)
        page = (uuid.UUID(value) for value in self.pages.get(platform, []))
        return sorted(connection_id for connection_id in page if after is None or connection_id > after)

    def page(self, platform: str, ids: list[uuid.UUID]) -> None:
        self.pages[platform] = [str(connection_id) for connection_id in ids]

    def started(self, platform: str, connection_id: uuid.UUID) -> list[Any]:
        entry: list[Any] = [connection_id, None]
        self._pending.setdefault(platform, deque()).append(entry)
        return entry

    def finished(self, platform: str, entry: list[Any], outcome: str) -> None:
        entry[1] = outcome
        pending = self._pending[platform]
        while pending and pending[0][1] is not None:
            connection_id, done_outcome = pending.popleft()
            self.done += 1
            self.counts[done_outcome] = self.counts.get(done_outcome, 0) + 1
            self.cursor[platform] = str(connection_id)


class BulkRunner:
    def __init__(self, database: Database, refresh: Refresh, settings: BulkSettings, owner: str) -> None:
        self._db = database
        self._refresh = refresh
        self._settings = settings
        self.owner = owner

    async def run_forever(self) -> None:
        while True:
            if not await self.run_once():
                await asyncio.sleep(self._settings.poll_interval_seconds)

    async def run_once(self) -> bool:
        """Claim a job and run it; whether there was one."""
        try:
            job = await store.claim_job(self._db, self.owner, self._settings.lease_seconds)
        except Exception as exc:  # the database is away, or not migrated yet: look again later
            log.warning("Looking for bulk refresh jobs failed (%s)", type(exc).__name__)
            return False
        if job is None:
            return False
        try:
            await _JobRun(self, job).run()
        except LeaseLostError:
            log.warning("Bulk refresh job %s: another runner took it over; stopping here", job.id)
        except Exception as exc:  # recording its end failed (the database away): its lease lapses, it resumes
            log.warning(
                "Bulk refresh job %s: recording its end failed (%s); it resumes later", job.id, type(exc).__name__
            )
        return True


class _JobRun:
    def __init__(self, runner: BulkRunner, job: ClaimedJob) -> None:
        self._runner = runner
        self._db = runner._db
        self._settings = runner._settings
        self._owner = runner.owner
        self._job = job
        self._progress = Progress(job.done, dict(job.counts), dict(job.cursor), dict(job.pages))
        self._saving = asyncio.Lock()
        self._stop = asyncio.Event()
        self._cancelled = job.cancel_requested
        self._failure: BaseException | None = None

    async def run(self) -> None:
        job = self._job
        if job.cancel_requested:
            await self._finish(JobStatus.CANCELLED)
            return
        try:
            matched = await store.count_matches(self._db, job)
            if job.total is None:
                await store.record_start(self._db, job.id, self._owner, self._settings.lease_seconds, matched)
            total = sum(sum(by_status.values()) for by_status in matched.values())
            log.info("Bulk refresh job %s %s: %d connection(s) match", job.id, _verb(job), total)
            if job.dry_run:
                await self._finish(JobStatus.SUCCEEDED, done=total, counts={WOULD_REFRESH: total})
                return
            platforms = sorted(set(matched) | set(job.cursor) | set(job.pages))
            await self._walk_all(platforms)
        except asyncio.CancelledError:  # the worker is stopping: save, and let any runner resume at once
            await asyncio.shield(self._give_back(None))
            raise
        except LeaseLostError:
            raise
        except Exception as exc:
            self._failure = exc
        if self._failure is not None:
            await self._failed(self._failure)
        elif self._cancelled:
            await self._finish(JobStatus.CANCELLED)
        else:
            await self._finish(JobStatus.SUCCEEDED)

    async def _walk_all(self, platforms: list[str]) -> None:
        saver = asyncio.create_task(self._save_regularly())
        walkers = [asyncio.create_task(self._walk(platform)) for platform in platforms]
        try:
            await asyncio.gather(*walkers)
        finally:
            for walker in walkers:
                walker.cancel()
            saver.cancel()
            await asyncio.gather(*walkers, saver, return_exceptions=True)

    async def _save_regularly(self) -> None:
        while True:
            await asyncio.sleep(self._settings.save_interval_seconds)
            try:
                if await self._save():
                    self._cancelled = True
                    self._stop.set()
            except LeaseLostError as exc:
                self._failure = exc
                self._stop.set()
                return
            except Exception as exc:  # the database is away: the lease is renewed at the next save
                log.warning("Saving bulk refresh job %s failed (%s); will retry", self._job.id, type(exc).__name__)

    async def _save(self, *, with_pages: bool = False) -> bool:
        progress = self._progress
        async with self._saving:
            return await store.save_progress(
                self._db,
                self._job.id,
                self._owner,
                self._settings.lease_seconds,
                done=progress.done,
                counts=dict(progress.counts),
                cursor=dict(progress.cursor),
                pages={platform: list(ids) for platform, ids in progress.pages.items()} if with_pages else None,
            )

    async def _walk(self, platform: str) -> None:
        pacer = Pacer(self._job.rate_per_platform)
        slots = asyncio.Semaphore(self._settings.concurrency)
        in_flight: set[asyncio.Task[None]] = set()
        progress = self._progress
        after = progress.done_through(platform)
        # First the page a previous run was handling when it stopped, whatever its rows are now.
        page = await self._rows(platform, after, progress.carried_page(platform) or None)
        try:
            while page and not self._stop.is_set():
                progress.page(platform, [connection_id for connection_id, _ in page])
                if await self._save(with_pages=True):  # the page is known before any of it is refreshed
                    self._cancelled = True
                    self._stop.set()
                for connection_id, user_id in page:
                    await slots.acquire()
                    if self._stop.is_set():
                        slots.release()
                        break
                    entry = progress.started(platform, connection_id)
                    task = asyncio.create_task(self._one(platform, connection_id, user_id, entry, slots, pacer))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                after = page[-1][0]
                page = await self._rows(platform, after)
            await asyncio.gather(*in_flight)
        finally:
            for task in list(in_flight):
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _rows(
        self, platform: str, after: uuid.UUID | None, ids: list[uuid.UUID] | None = None
    ) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """The (id, user id) of the next page of matching connections after ``after``, or of
        ``ids`` whatever they are now; in id order."""
        row = ConnectionRow
        conditions: list[ColumnElement[bool]]
        if ids is not None:
            conditions = [row.id.in_(ids)]
        else:
            conditions = [row.platform == platform, *self._job.selector.conditions(self._job.created_at)]
            if after is not None:
                conditions.append(row.id > after)
        async with self._db.sessions() as session:
            result = await session.execute(
                select(row.id, row.user_id).where(*conditions).order_by(row.id).limit(self._settings.page_size)
            )
            return [(connection_id, user_id) for connection_id, user_id in result]

    async def _one(
        self,
        platform: str,
        connection_id: uuid.UUID,
        user_id: uuid.UUID,
        entry: list[Any],
        slots: asyncio.Semaphore,
        pacer: Pacer,
    ) -> None:
        try:
            outcome = await self._still_to_refresh(connection_id)
            if outcome is None:
                await pacer.wait(self._stop)  # the rate counts refreshes, paced as close to the call as can be
                if self._stop.is_set():
                    return  # cancelled meanwhile: left for no one (or, after a failure, for the next run)
                result = await self._runner._refresh(user_id, platform)
                outcome = result.outcome
            self._progress.finished(platform, entry, outcome)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database or a bug: the run stops, the job is retried from its cursor
            log.warning("Bulk refresh job %s: a refresh raised %s; stopping this run", self._job.id, type(exc).__name__)
            if self._failure is None:
                self._failure = exc
            self._stop.set()
        finally:
            slots.release()

    async def _still_to_refresh(self, connection_id: uuid.UUID) -> str | None:
        """None when the connection is to be refreshed now; else the outcome it counts as."""
        job = self._job
        row = ConnectionRow
        selected = and_(*job.selector.conditions(job.created_at))
        async with self._db.sessions() as session:
            found = (
                await session.execute(
                    select(row.last_refreshed_at, case((selected, True), else_=False)).where(row.id == connection_id)
                )
            ).one_or_none()
        if found is None:
            return NO_LONGER_SELECTED
        last_refreshed_at, still_selected = found
        if last_refreshed_at is not None and last_refreshed_at >= job.created_at:
            return ALREADY_REFRESHED
        return None if still_selected else NO_LONGER_SELECTED

    async def _finish(self, status: JobStatus, **values: Any) -> None:
        progress = self._progress
        values = {"done": progress.done, "counts": progress.counts, "resume_cursor": progress.cursor, **values}
        await store.finish(self._db, self._job.id, self._owner, status, **values)
        log.info("Bulk refresh job %s %s: %s", self._job.id, status.value, values["counts"])

    async def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, LeaseLostError):
            raise exc
        reason = type(exc).__name__
        if self._job.attempts >= self._settings.max_attempts:
            log.error("Bulk refresh job %s failed %d times (%s): given up", self._job.id, self._job.attempts, reason)
            await self._finish(JobStatus.FAILED, last_error=reason)
            return
        await self._give_back(reason)

    async def _give_back(self, reason: str | None) -> None:
        """Save what is done and let the job go; after a failure, it is taken again after a delay."""
        retry_in = 0.0 if reason is None else min(MAX_RETRY_DELAY_SECONDS, 2.0**self._job.attempts)
        try:
            await self._save()
            await store.release(self._db, self._job.id, self._owner, last_error=reason, retry_in=retry_in)
        except Exception as exc:  # the lease lapses by itself
            log.warning("Giving back bulk refresh job %s failed (%s)", self._job.id, type(exc).__name__)
        else:
            log.info("Bulk refresh job %s given back at %d done", self._job.id, self._progress.done)


def _verb(job: ClaimedJob) -> str:
    if job.dry_run:
        return "(dry run) started"
    return "resumed" if job.attempts > 1 else "started"
