"""Bulk refresh jobs run by real workers against the sandbox, on a database of this module's own:
a job refreshes exactly what its selector matches, at its rate per platform; a dry run changes
nothing; a cancel stops it; it survives a worker killed with SIGKILL (resumed by the next,
nothing refreshed twice); two workers never run one job at once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from stream_app.bulk import BulkJobs, BulkJobView, BulkSelector, BulkSettings, JobStatus
from stream_app.bulk.models import BulkJobRow
from stream_app.bulk.runner import BulkRunner
from stream_app.bulk.store import LeaseLostError, claim_job, save_progress
from stream_app.cli import cli
from stream_app.crypto import TokenCipher
from stream_app.db import Database
from stream_app.db.models import ConnectionRow
from stream_app.engine import RefreshResult
from stream_app.sandbox import SandboxServer
from tests.support.connections import seed_connection
from tests.support.kafka import create_topics
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

INVALID_CLIENT = "invalid_client: the provider refused our client credentials (HTTP 401)"
CONCURRENCY = 4


class BulkStack:
    def __init__(self, database_url: str, sandbox: SandboxServer, cipher: TokenCipher, workers: Workers) -> None:
        self.database = Database(database_url)
        self.sandbox = sandbox
        self.cipher = cipher
        self.workers = workers
        self.jobs = BulkJobs(self.database)

    async def seed(
        self, platform: str, count: int, *, status: str, expires_in: timedelta = timedelta(hours=1)
    ) -> list[tuple[uuid.UUID, str]]:
        """``count`` connections of ``platform`` in ``status`` (an `error` one as a refused client
        secret leaves it); their (user id, sandbox grant id)."""
        seeded = []
        for _ in range(count):
            user_id, grant = await seed_connection(
                self.database, self.cipher, self.sandbox, platform, expires_in=expires_in
            )
            seeded.append((user_id, grant["grant_id"]))
        if status != "connected":
            async with self.database.transaction() as session:
                await session.execute(
                    update(ConnectionRow)
                    .where(ConnectionRow.user_id.in_([user for user, _ in seeded]), ConnectionRow.platform == platform)
                    .values(status=status, last_sync_status="error", last_sync_error=INVALID_CLIENT)
                )
        return seeded

    def refresh_counts(self, seeded: list[tuple[uuid.UUID, str]]) -> list[int]:
        return [self._grant(grant_id).refresh_count for _, grant_id in seeded]

    def first_refreshes(self, seeded: list[tuple[uuid.UUID, str]]) -> list[float]:
        return sorted(self._grant(grant_id).refreshed_at[0] for _, grant_id in seeded)

    def in_flight(self, seeded: list[tuple[uuid.UUID, str]]) -> int:
        return sum(self._grant(grant_id).in_flight for _, grant_id in seeded)

    def _grant(self, grant_id: str) -> Any:
        grant = self.sandbox.state.grant(grant_id)
        assert grant is not None
        return grant

    async def statuses(self, platform: str, seeded: list[tuple[uuid.UUID, str]]) -> list[str]:
        async with self.database.sessions() as session:
            rows = await session.scalars(
                select(ConnectionRow.status).where(
                    ConnectionRow.platform == platform, ConnectionRow.user_id.in_([user for user, _ in seeded])
                )
            )
            return list(rows)

    async def connected(self, platform: str, seeded: list[tuple[uuid.UUID, str]]) -> set[str]:
        """The grants of ``seeded`` whose rows are `connected` (refreshed and stored)."""
        grants = dict(seeded)
        async with self.database.sessions() as session:
            users = await session.scalars(
                select(ConnectionRow.user_id).where(
                    ConnectionRow.platform == platform,
                    ConnectionRow.user_id.in_(list(grants)),
                    ConnectionRow.status == "connected",
                )
            )
            return {grants[user] for user in users}

    async def job_row(self, job_id: uuid.UUID) -> BulkJobRow:
        async with self.database.sessions() as session:
            row = await session.get(BulkJobRow, job_id, populate_existing=True)
            assert row is not None
            return row

    async def until(self, job_id: uuid.UUID, done: Any, timeout: float = 60.0) -> BulkJobView:
        """The job's view once ``done(view)`` holds (polled)."""
        deadline = time.monotonic() + timeout
        while True:
            view = await self.jobs.get(job_id)
            assert view is not None
            if done(view):
                return view
            assert time.monotonic() < deadline, (
                f"job not there within {timeout:g}s: {view}\n{self.workers.started[-1].log()[-3000:]}"
            )
            await asyncio.sleep(0.05)

    async def finished(self, job_id: uuid.UUID, timeout: float = 60.0) -> BulkJobView:
        return await self.until(job_id, lambda view: view.finished, timeout)


@pytest.fixture(scope="module")
def worker_env(
    kafka_bootstrap: str, module_database_url: str, sandbox: SandboxServer, encryption_key: str
) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    names = ("connection.created", "token.expiring", "token.refreshed", "token.needs_reauth", "token.refresh_failed")
    topics = {name: f"{name}.{suffix}" for name in names}
    dead_letters = [f"{topics[name]}.dlq" for name in ("connection.created", "token.expiring")]
    asyncio.run(create_topics(kafka_bootstrap, [*topics.values(), *dead_letters]))
    return {
        "ENCRYPTION_KEY": encryption_key,
        "DATABASE_URL": module_database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_APP_ID": f"token-refresh-bulk-{suffix}",
        "KAFKA_SESSION_TIMEOUT_SECONDS": "6",
        "SCAN_INTERVAL_SECONDS": "2",
        "REFRESH_LEASE_SECONDS": "30",
        "HTTP_TIMEOUT_SECONDS": "10",
        "HTTP_PORT": "0",
        "LOG_LEVEL": "INFO",
        # Up to three workers at once here, on a server other tests share.
        "DATABASE_POOL_SIZE": "5",
        "DATABASE_MAX_OVERFLOW": "2",
        # Fast enough for tests: a killed runner's job is resumed 3 s after its last save.
        "BULK_REFRESH_POLL_INTERVAL_SECONDS": "0.2",
        "BULK_REFRESH_LEASE_SECONDS": "3",
        "BULK_REFRESH_SAVE_INTERVAL_SECONDS": "1",
        "BULK_REFRESH_CONCURRENCY": str(CONCURRENCY),
        **{f"TOPIC_{name.upper().replace('.', '_')}": topic for name, topic in topics.items()},
        **sandbox.service_env(),
    }


class Workers:
    """The module's worker processes: one to begin with; the tests kill and add some."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self._env = env
        self._workdir = workdir
        self.started: list[WorkerProcess] = []

    def start(self, name: str) -> WorkerProcess:
        env = {**self._env, "TOKEN_SPOOL_DIR": str(self._workdir / f"{name}-spool")}
        self.started.append(WorkerProcess(env, self._workdir / f"{name}.log").start())
        return self.started[-1]

    def live(self) -> list[WorkerProcess]:
        return [worker for worker in self.started if worker.running]

    def stop(self) -> None:
        for worker in self.started:
            worker.stop()


@pytest.fixture(scope="module")
def workers(worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    workers = Workers(worker_env, tmp_path_factory.mktemp("bulk-workers"))
    try:
        workers.start("worker").wait_ready(timeout=90)
        yield workers
    finally:
        workers.stop()


@pytest.fixture
async def bulk(
    workers: Workers, module_database_url: str, sandbox: SandboxServer, encryption_key: str
) -> AsyncIterator[BulkStack]:
    stack = BulkStack(module_database_url, sandbox, TokenCipher(encryption_key), workers)
    yield stack
    await stack.database.dispose()


async def test_a_job_refreshes_exactly_the_error_rows_of_a_platform_at_its_rate(bulk: BulkStack) -> None:
    target = await bulk.seed("spotify", 16, status="error")
    fresh = await bulk.seed("spotify", 3, status="connected")
    other_platform = await bulk.seed("discord", 3, status="error")

    job_id = await bulk.jobs.create(BulkSelector(platform="spotify", statuses=["error"]), rate_per_platform=8)
    view = await bulk.finished(job_id)

    assert view.status is JobStatus.SUCCEEDED
    assert (view.total, view.done, view.percent) == (16, 16, 100.0)
    assert view.counts == {"refreshed": 16}
    assert view.matched == {"spotify": {"error": 16}}
    assert bulk.refresh_counts(target) == [1] * 16
    assert bulk.refresh_counts(fresh) + bulk.refresh_counts(other_platform) == [0] * 6
    assert await bulk.statuses("spotify", target) == ["connected"] * 16
    assert await bulk.statuses("discord", other_platform) == ["error"] * 3
    # 8 a second: the 16 refreshes span at least 15 intervals of 1/8 s (generously: 80 %).
    starts = bulk.first_refreshes(target)
    assert starts[-1] - starts[0] >= 0.8 * 15 / 8


async def test_a_dry_run_counts_by_platform_and_status_and_refreshes_nothing(bulk: BulkStack) -> None:
    errors = await bulk.seed("gmail", 4, status="error")
    connected = await bulk.seed("gmail", 2, status="connected", expires_in=timedelta(minutes=30))
    later = await bulk.seed("gmail", 2, status="connected", expires_in=timedelta(days=2))

    selector = BulkSelector(platform="gmail", expiring_within="1h")
    job_id = await bulk.jobs.create(selector, dry_run=True)
    view = await bulk.finished(job_id)

    assert view.status is JobStatus.SUCCEEDED and view.dry_run
    assert view.matched == {"gmail": {"error": 4, "connected": 2}}
    assert (view.total, view.counts) == (6, {"would_refresh": 6})
    assert bulk.refresh_counts(errors + connected + later) == [0] * 8
    assert await bulk.statuses("gmail", errors) == ["error"] * 4


async def test_a_cancelled_job_stops_between_connections(bulk: BulkStack) -> None:
    seeded = await bulk.seed("google_calendar", 20, status="error")
    job_id = await bulk.jobs.create(BulkSelector(platform="google_calendar", statuses=["error"]), rate_per_platform=4)
    await bulk.until(job_id, lambda view: view.done >= 2)

    cancelling = await bulk.jobs.cancel(job_id)
    view = await bulk.finished(job_id)

    assert cancelling is not None and cancelling.cancel_requested
    assert view.status is JobStatus.CANCELLED
    assert 2 <= view.done < 20
    refreshed = sum(bulk.refresh_counts(seeded))
    assert refreshed == view.counts["refreshed"] < 20
    assert (await bulk.statuses("google_calendar", seeded)).count("connected") == refreshed


async def test_a_job_survives_a_killed_worker_and_nothing_is_refreshed_twice(bulk: BulkStack) -> None:
    seeded = await bulk.seed("youtube", 30, status="error")
    job_id = await bulk.jobs.create(BulkSelector(platform="youtube", statuses=["error"]), rate_per_platform=10)

    # Killed once it has stored refreshes beyond its last save (saved every second): the next
    # worker must not refresh those again.
    deadline = time.monotonic() + 30
    while True:
        saved = (await bulk.job_row(job_id)).done
        stored = (await bulk.statuses("youtube", seeded)).count("connected")
        if saved >= 3 and stored >= saved + 3:
            break
        assert time.monotonic() < deadline, "the job did not get under way"
        await asyncio.sleep(0.01)
    for worker in bulk.workers.live():
        worker.kill()
    stored_by_the_first = await bulk.connected("youtube", seeded)
    # Refreshes the provider made whose answers died with the worker (not stored): a client
    # loses those whatever it does (README); at most one per refresh in flight.
    lost = {
        grant for (_, grant), count in zip(seeded, bulk.refresh_counts(seeded), strict=True) if count
    } - stored_by_the_first
    assert (await bulk.job_row(job_id)).status == "running"

    bulk.workers.start("worker-after-kill")
    view = await bulk.finished(job_id, timeout=90)

    assert view.status is JobStatus.SUCCEEDED
    assert view.attempts == 2
    assert (view.total, view.done) == (30, 30)
    assert view.counts.get("refreshed", 0) + view.counts.get("already_refreshed", 0) == 30, view.counts
    assert 0 < len(stored_by_the_first) < 30 and len(lost) <= CONCURRENCY
    counts = dict(zip((grant for _, grant in seeded), bulk.refresh_counts(seeded), strict=True))
    assert all(counts[grant] == 1 for grant in stored_by_the_first)  # none refreshed again
    assert {grant for grant, count in counts.items() if count != 1} <= lost
    assert await bulk.statuses("youtube", seeded) == ["connected"] * 30


async def test_a_stopping_worker_gives_its_job_back_at_once(bulk: BulkStack) -> None:
    if not bulk.workers.live():
        bulk.workers.start("worker-for-stop").wait_ready(timeout=90)
    seeded = await bulk.seed("twitch", 12, status="error")
    job_id = await bulk.jobs.create(BulkSelector(platform="twitch", statuses=["error"]), rate_per_platform=4)
    await bulk.until(job_id, lambda view: view.done >= 2)

    for worker in bulk.workers.live():
        assert worker.stop(), "the worker did not stop by itself"
    given_back = await bulk.job_row(job_id)
    bulk.workers.start("worker-after-stop")
    view = await bulk.finished(job_id)

    # Saved and released on the way out, not left for its lease to lapse.
    assert (given_back.status, given_back.lease_owner) == ("running", None)
    assert 2 <= given_back.done < 12
    assert view.status is JobStatus.SUCCEEDED and view.attempts == 2
    assert view.counts.get("refreshed", 0) + view.counts.get("already_refreshed", 0) == 12, view.counts
    assert bulk.refresh_counts(seeded) == [1] * 12


async def test_two_workers_never_run_one_job_at_once(bulk: BulkStack) -> None:
    while len(bulk.workers.live()) < 2:
        bulk.workers.start(f"worker-{len(bulk.workers.started)}").wait_ready(timeout=90)
    seeded = await bulk.seed("microsoft", 16, status="error")
    job_id = await bulk.jobs.create(BulkSelector(platform="microsoft", statuses=["error"]), rate_per_platform=8)
    owners = set()
    while (row := await bulk.job_row(job_id)).status not in ("succeeded", "failed", "cancelled"):
        if row.lease_owner is not None:
            owners.add(row.lease_owner)
        await asyncio.sleep(0.05)

    assert row.status == "succeeded" and row.attempts == 1
    assert len(owners) == 1
    assert bulk.refresh_counts(seeded) == [1] * 16


@pytest.fixture
async def idle_database(own_database_url: str) -> AsyncIterator[Database]:
    """A database no worker looks at."""
    database = Database(own_database_url)
    yield database
    await database.dispose()


async def test_one_claim_wins_and_a_lapsed_runner_is_fenced_off(idle_database: Database) -> None:
    jobs = BulkJobs(idle_database)
    job_id = await jobs.create(BulkSelector(platform="spotify"))

    claims = await asyncio.gather(*(claim_job(idle_database, f"runner-{n}", 0.5) for n in range(8)))
    winners = [claim for claim in claims if claim is not None]
    assert [claim.id for claim in winners] == [job_id]
    assert await claim_job(idle_database, "late", 0.5) is None  # held while its lease runs

    first = next(f"runner-{n}" for n, claim in enumerate(claims) if claim is not None)
    deadline = time.monotonic() + 10
    while (resumed := await claim_job(idle_database, "next", 30)) is None:  # once the lease lapses
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert resumed.id == job_id and resumed.attempts == 2
    with pytest.raises(LeaseLostError):
        await save_progress(idle_database, job_id, first, 30, done=1, counts={"refreshed": 1}, cursor={})


def token_refresh(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_app", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_cli_runs_a_job_to_its_end_with_its_counts(
    bulk: BulkStack, module_database_url: str, encryption_key: str, tmp_path: Path
) -> None:
    seeded = await bulk.seed("reddit", 5, status="error")
    env = {"DATABASE_URL": module_database_url, "ENCRYPTION_KEY": encryption_key}
    args = ("bulk-refresh", "--platform", "reddit", "--status", "error", "--last-error-class", "invalid_client")
    done = await asyncio.to_thread(token_refresh, *args, "--rate", "20", env=env, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    job_line, summary, *counts = done.stdout.splitlines()
    job_id = job_line.removeprefix("bulk refresh job ")
    assert summary == f"job {job_id} succeeded: 5 of 5 handled"
    assert counts == ["  refreshed\t5"]
    assert bulk.refresh_counts(seeded) == [1] * 5

    again = token_refresh("bulk-refresh", "--cancel", job_id, env=env, cwd=tmp_path)
    assert (again.returncode, again.stdout) == (0, f"cancel requested: job {job_id} is succeeded\n")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--expiring-within", "soon"], "--expiring-within"),
        (["--platform", "myspace"], "--platform"),
        (["--last-error-class", "Invalid Client"], "--last-error-class"),
        (["--cancel", "not-a-job"], "--cancel"),
    ],
)
def test_a_bad_option_is_one_line_naming_it(args: list[str], named: str, encryption_key: str) -> None:
    """Refused before the database is asked (none answers at this URL)."""
    nowhere = "postgresql+asyncpg://token_refresh@127.0.0.1:1/nowhere"
    result = CliRunner(env={"DATABASE_URL": nowhere, "ENCRYPTION_KEY": encryption_key}).invoke(
        cli, ["bulk-refresh", *args]
    )
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"token-refresh: {named}: "), result.stderr


def test_a_database_away_is_one_line(encryption_key: str) -> None:
    nowhere = "postgresql+asyncpg://token_refresh@127.0.0.1:1/nowhere"
    runner = CliRunner(env={"DATABASE_URL": nowhere, "ENCRYPTION_KEY": encryption_key})
    result = runner.invoke(cli, ["bulk-refresh", "--platform", "spotify", "--status", "error"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("token-refresh: "), result.stderr


async def test_a_run_that_fails_gives_the_job_back_for_later_and_then_gives_up(idle_database: Database) -> None:
    async with idle_database.transaction() as session:
        session.add(ConnectionRow(user_id=uuid.uuid4(), platform="spotify", status="error", version=0))
    job_id = await BulkJobs(idle_database).create(BulkSelector(platform="spotify"))

    async def broken(user_id: uuid.UUID, platform: str) -> RefreshResult:
        raise RuntimeError("the database went away")

    runner = BulkRunner(
        idle_database, broken, replace(BulkSettings.defaults(), max_attempts=2, save_interval_seconds=0.1), "runner"
    )
    assert await runner.run_once()
    async with idle_database.sessions() as session:
        first = await session.get(BulkJobRow, job_id)
    assert first is not None
    assert (first.status, first.lease_owner, first.last_error, first.done) == ("running", None, "RuntimeError", 0)
    assert await claim_job(idle_database, "eager", 30) is None  # not at once: after a delay

    async with idle_database.transaction() as session:  # the delay is over
        await session.execute(update(BulkJobRow).values(lease_expires_at=None))
    assert await runner.run_once()
    view = await BulkJobs(idle_database).get(job_id)
    assert view is not None
    assert (view.status, view.attempts, view.last_error) == (JobStatus.FAILED, 2, "RuntimeError")
