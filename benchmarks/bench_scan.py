#!/usr/bin/env python3
"""Expiry-scan throughput at scale: a backlog of due connections in a large table, requested
through the real broker, against the old scan's one acknowledged send per row.

The script creates a Postgres database of its own (dropped at the end) and a topic of its own
(deleted at the end), seeds ``--rows`` connections of which ``--backlog`` are due now (the
rest are due hours later, so they are in the index but not in the scan), and runs the real
scan (``stream_app.scheduler.scan_requests``: pages read ``FOR UPDATE SKIP LOCKED`` and
marked with one ``UPDATE ... WHERE id = ANY(...)``, each claim committed, then emitted with
``KafkaPublisher.send_many``, the next page claimed meanwhile) with the real publisher
against the real broker, as the worker does. Seeding is
one ``INSERT ... SELECT`` over ``generate_series`` (rows need no valid ciphertext: the scan
reads none), with the secondary indexes built after it.

Each run must emit every due row and the topic must grow by as many records, or the script
fails. Besides rows/s it reports the plans of the scan's claim (``EXPLAIN ANALYZE`` of its
first page's read and mark, rolled back), the RSS of this process (the one running the scan)
before and after the scan, and the CPU time per row of this process and of the Postgres
backends serving it (a local server). The baseline is the old emit: ``KafkaPublisher.send``
(send_and_wait) per row, over ``--baseline-rows`` of the backlog only (at ~150 rows/s a
50,000-row backlog would take minutes).

    .venv/bin/python benchmarks/bench_scan.py --rows 1000000 --backlog 50000 --rounds 3
    .venv/bin/python benchmarks/bench_scan.py --rows 20000 --backlog 5000 --page-size 500
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import event, text

from stream_app.catalog import REFRESHABLE_PLATFORMS
from stream_app.clock import utc_now
from stream_app.crypto import generate_key
from stream_app.db import Database
from stream_app.db.scan import claim_due_page
from stream_app.publisher import KafkaPublisher, OutgoingRecord
from stream_app.scheduler import RequestPage, scan_requests
from stream_app.settings import Settings

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the script's own folder is on the path, not the repository
    sys.path.insert(0, str(REPO))
from tests.support.databases import POSTGRES_URL, create_database, drop_database  # noqa: E402  # the suite's helpers
from tests.support.worker import WorkerProcess  # noqa: E402

SCAN_INDEX = "idx_platform_connections_refresh_due"
WORKER_TOPICS = (
    "connection.created",
    "token.expiring",
    "token.refreshed",
    "token.needs_reauth",
    "token.refresh_failed",
)
# Built after the rows are in (faster than maintaining them row by row); the primary key and
# the (user_id, platform) constraint stay, as in the migrations.
SECONDARY_INDEXES = {
    "idx_platform_connections_status": "(status) WHERE status IN ('connected', 'token_expired')",
    SCAN_INDEX: "(refresh_due_at, id) WHERE status IN ('connected', 'token_expired') AND refresh_due_at IS NOT NULL",
    "idx_platform_connections_expiry": "(token_expires_at) WHERE token_expires_at IS NOT NULL",
}

SEED = """
INSERT INTO platform_connections (
    id, user_id, platform, access_token, refresh_token, token_expires_at, status, last_sync_status,
    connected_at, updated_at, version, consecutive_failures, token_lifetime_seconds, refresh_due_at)
SELECT gen_random_uuid(), gen_random_uuid(), ($3::text[])[1 + i % cardinality($3::text[])],
    'bench-access-' || i, 'bench-refresh-' || i,
    CASE WHEN i <= $2 THEN $4::timestamp + interval '2 minutes'
         ELSE $4::timestamp + interval '2 hours' + (i % 86400) * interval '1 second' END,
    'connected', 'success', $4::timestamp, $4::timestamp, 0, 0, 3600,
    -- the backlog: due up to 3 minutes ago (as after an outage); the rest: hours from now
    CASE WHEN i <= $2 THEN $4::timestamp - (i % 180) * interval '1 second'
         ELSE $4::timestamp + interval '1 hour' + (i % 86400) * interval '1 second' END
FROM generate_series(1, $1) AS i
"""


@dataclass
class ScanRun:
    variant: str
    rows: int
    seconds: float
    cpu_seconds: float
    postgres_cpu_seconds: float
    rss_mb_before: float
    rss_mb_after: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds


@dataclass
class Bench:
    rows: int
    backlog: int
    page_size: int
    partitions: int
    plan: str = ""
    seed_seconds: float = 0.0
    runs: list[ScanRun] = field(default_factory=list)


def _cpu_seconds_of(pid: int) -> float:
    """utime + stime of a process on this host (0 if it is gone or not readable)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def postgres_cpu_seconds(database: Database) -> float:
    """CPU time of the server processes serving the bench's database (a local server only)."""
    async with database.sessions() as session:
        pids = (
            await session.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"))
        ).scalars()
        return sum(_cpu_seconds_of(pid) for pid in pids)


def rss_mb() -> float:
    """This process's resident set size now (not its peak), in MiB."""
    return _rss_mb_of(os.getpid())


async def seed(database: Database, rows: int, backlog: int, fillfactor: int | None = None) -> None:
    """``rows`` connections, ``backlog`` of them due now, in one statement on the server."""
    async with database.transaction() as session:
        if fillfactor is not None:
            await session.execute(text(f"ALTER TABLE platform_connections SET (fillfactor = {int(fillfactor)})"))
        for name in SECONDARY_INDEXES:
            await session.execute(text(f"DROP INDEX {name}"))
        connection = await session.connection()
        await connection.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection
        await driver.execute(SEED, rows, backlog, list(REFRESHABLE_PLATFORMS), utc_now())
        for name, definition in SECONDARY_INDEXES.items():
            await session.execute(text(f"CREATE INDEX {name} ON platform_connections {definition}"))
    async with database.engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.exec_driver_sql("VACUUM ANALYZE platform_connections")


async def make_due_again(database: Database, how_many: int | None = None) -> None:
    """Forget every request; with ``how_many``, leave only that many (the earliest due) due."""
    async with database.transaction() as session:
        await session.execute(
            text("UPDATE platform_connections SET refresh_requested_at = NULL WHERE refresh_requested_at IS NOT NULL")
        )
        if how_many is not None:
            await session.execute(
                text(
                    "UPDATE platform_connections SET refresh_requested_at = :now WHERE id IN ("
                    " SELECT id FROM platform_connections WHERE refresh_due_at <= :now"
                    " ORDER BY refresh_due_at, id OFFSET :keep)"
                ),
                {"now": utc_now(), "keep": how_many},
            )
    async with database.engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.exec_driver_sql("VACUUM platform_connections")


async def explain_claim(database: Database, settings: Settings) -> str:
    """The plans of the scan's first claim (its page read and its mark), as it runs them:
    the statements are captured from a real claim, then run under EXPLAIN ANALYZE; both
    transactions are rolled back."""
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        captured.append((statement, parameters))

    now = utc_now()
    event.listen(database.engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with database.sessions() as session, session.begin():
            await claim_due_page(
                session,
                due_by=now + timedelta(seconds=settings.scan_interval_seconds),
                requested_before=now - timedelta(seconds=settings.refresh_buffer_seconds / 2),
                after=None,
                limit=settings.scan_page_size,
                platforms=REFRESHABLE_PLATFORMS,
                now=now,
            )
            await session.rollback()
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", capture)
    plans = []
    async with database.sessions() as session, session.begin():
        driver: Any = (await (await session.connection()).get_raw_connection()).driver_connection
        for statement, parameters in captured:
            if "platform_connections" in statement:
                lines = await driver.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", *parameters)
                plans.append(_LONG_ARRAY.sub(_shortened, "\n".join(line[0] for line in lines)))
        await session.rollback()
    return "\n\n".join(plans)


_LONG_ARRAY = re.compile(r"'\{([^'{}]{200,})\}'")


def _shortened(match: re.Match[str]) -> str:
    return f"'{{... {match.group(1).count(',') + 1} ids ...}}'"


def uses_index(plan: str) -> bool:
    return SCAN_INDEX in plan and "Seq Scan" not in plan


async def records_on(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, partition) for partition in range(partitions)])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def _scan_once(
    variant: str, database: Database, settings: Settings, publisher: KafkaPublisher, topic: str, expected: int
) -> ScanRun:
    async def batched(page: RequestPage) -> None:  # what the worker's scan does (agents/scheduler.py)
        await publisher.send_many(page.records(topic))

    async def per_row(page: RequestPage) -> None:  # the old scan: each record acknowledged before the next
        for record in page.records(topic):
            await publisher.send(record.topic, record.key, record.value)

    before = await records_on(settings.kafka_bootstrap_servers, topic, settings.kafka_topic_partitions)
    rss_before = rss_mb()
    postgres_cpu = await postgres_cpu_seconds(database)
    cpu = time.process_time()
    started = time.perf_counter()
    emitted = await scan_requests(database, settings, batched if variant == "batched" else per_row)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu
    postgres_cpu = await postgres_cpu_seconds(database) - postgres_cpu
    rss_after = rss_mb()
    published = await records_on(settings.kafka_bootstrap_servers, topic, settings.kafka_topic_partitions) - before
    if emitted != expected or published != expected:
        raise SystemExit(f"{variant}: emitted {emitted}, topic grew by {published}, expected {expected}")
    return ScanRun(variant, emitted, seconds, cpu_seconds, postgres_cpu, rss_before, rss_after)


async def run_bench(
    server_url: str,
    bootstrap: str,
    *,
    rows: int,
    backlog: int,
    page_size: int | None = None,
    rounds: int = 1,
    partitions: int = 4,
    baseline_rows: int = 0,
    fillfactor: int | None = None,
    log: bool = False,
) -> Bench:
    suffix = uuid.uuid4().hex[:8]
    name = f"bench_scan_{suffix}"
    topic = f"bench-scan.{suffix}"
    database_url = await create_database(server_url, name)
    database = Database(database_url)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    settings = Settings(
        encryption_key=generate_key(),
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap,
        kafka_topic_partitions=partitions,
    )
    if page_size is not None:
        settings = settings.model_copy(update={"scan_page_size": page_size})
    publisher = KafkaPublisher(settings)
    bench = Bench(rows, backlog, settings.scan_page_size, partitions)

    def say(line: str) -> None:
        if log:
            sys.stderr.write(line + "\n")

    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        started = time.perf_counter()
        await seed(database, rows, backlog, fillfactor)
        bench.seed_seconds = time.perf_counter() - started
        say(f"  seeded {rows:,} connections ({backlog:,} due) in {bench.seed_seconds:.1f} s")
        await publisher.send_many([OutgoingRecord(topic, b"warm-up", b"{}")])  # connect, learn metadata
        await database.warm_up()
        bench.plan = await explain_claim(database, settings)
        for round_ in range(rounds):
            if baseline_rows:
                await make_due_again(database, baseline_rows)
                run = await _scan_once("per-row", database, settings, publisher, topic, min(baseline_rows, backlog))
                bench.runs.append(run)
                say(f"  round {round_ + 1}: per-row {run.rows:,} rows in {run.seconds:.2f} s")
            await make_due_again(database)
            run = await _scan_once("batched", database, settings, publisher, topic, backlog)
            bench.runs.append(run)
            say(
                f"  round {round_ + 1}: batched {run.rows:,} rows in {run.seconds:.2f} s, "
                f"RSS {run.rss_mb_before:.0f} -> {run.rss_mb_after:.0f} MiB"
            )
    finally:
        await publisher.stop()
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()
            await database.dispose()
            await drop_database(server_url, name)
    return bench


async def measure_scan(server_url: str, bootstrap: str, *, rows: int, backlog: int) -> dict[str, Any]:
    """One scan of a ``backlog`` of due connections among ``rows``, through the real broker, with
    the service's settings: rows_per_second, index_plan (the claim uses the scan's index and no
    sequential scan), plan (its EXPLAIN ANALYZE), rss_mb_before / rss_mb_after (of this
    process, the one running the scan, around it); also seconds, CPU seconds of this process
    and of the Postgres backends serving the scan."""
    bench = await run_bench(server_url, bootstrap, rows=rows, backlog=backlog)
    [run] = bench.runs
    return {
        "rows": rows,
        "backlog": backlog,
        "page_size": bench.page_size,
        "seconds": run.seconds,
        "rows_per_second": run.rows_per_second,
        "cpu_seconds": run.cpu_seconds,
        "postgres_cpu_seconds": run.postgres_cpu_seconds,
        "index_plan": uses_index(bench.plan),
        "plan": bench.plan,
        "rss_mb_before": run.rss_mb_before,
        "rss_mb_after": run.rss_mb_after,
    }


async def measure_worker_rss(
    server_url: str, bootstrap: str, *, rows: int, backlog: int, seconds: float = 60.0
) -> dict[str, Any]:
    """The RSS of a real worker (``python -m stream_app worker``) on a table of ``rows``
    connections, ``backlog`` of them due: sampled every second for ``seconds`` while its scan
    (every 5 s) requests them and its agents consume the requests. The rows hold no valid
    ciphertext, so each request ends as a dead letter (connection marked error): the refresh
    path runs up to its first step. The worker has an app id, topics and database of its own,
    all removed at the end."""
    suffix = uuid.uuid4().hex[:8]
    name = f"bench_worker_{suffix}"
    topics = {topic: f"{topic}.{suffix}" for topic in WORKER_TOPICS}
    created = [*topics.values(), f"{topics['connection.created']}.dlq", f"{topics['token.expiring']}.dlq"]
    database_url = await create_database(server_url, name)
    database = Database(database_url)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    samples: list[float] = []
    workdir = REPO / ".local" / "bench" / f"worker-rss-{suffix}"  # its log, spool and Faust data
    try:
        await seed(database, rows, backlog)
        await admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1) for topic in created])
        env = {
            "ENCRYPTION_KEY": generate_key(),
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_APP_ID": f"token-refresh-bench-{suffix}",
            "SCAN_INTERVAL_SECONDS": "5",
            "LOG_LEVEL": "INFO",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(_free_port()),
            "TOKEN_SPOOL_DIR": str(workdir / "spool"),
            **{f"TOPIC_{topic.upper().replace('.', '_')}": named for topic, named in topics.items()},
        }
        worker = WorkerProcess(env, workdir / "worker.log").start()
        try:
            started = time.monotonic()
            while time.monotonic() - started < seconds and worker.running:
                await asyncio.sleep(1)
                samples.append(_rss_mb_of(worker.pid))
        finally:
            await asyncio.to_thread(worker.stop, 30)
        emitted = sum(
            int(line.split("emitted ")[1].split()[0])
            for line in worker.log().splitlines()
            if "Expiry scan emitted" in line
        )
    finally:
        try:
            await admin.delete_topics(created)
        finally:
            await admin.close()
            await database.dispose()
            await drop_database(server_url, name)
            shutil.rmtree(workdir, ignore_errors=True)
    return {
        "rows": rows,
        "backlog": backlog,
        "requested": emitted,
        "worker_rss_mb_max": max(samples, default=0.0),
        "worker_rss_mb_last": samples[-1] if samples else 0.0,
        "worker_rss_mb_samples": samples,
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _rss_mb_of(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def report(bench: Bench, rounds: int) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    variants = [variant for variant in ("per-row", "batched") if any(run.variant == variant for run in bench.runs)]
    median = {
        variant: statistics.median_low([run.rows_per_second for run in bench.runs if run.variant == variant])
        for variant in variants
    }
    lines = [
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"1-min load {load:.2f}",
        f"{bench.rows:,} connections, {bench.backlog:,} due; page {bench.page_size}; topic of {bench.partitions} "
        f"partitions; seeded in {bench.seed_seconds:.1f} s; median of {rounds} round(s)",
        "",
        "| scan emit | rows | seconds | rows/s | CPU µs/row: scan, Postgres | RSS before -> after (MiB) | vs per-row |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in variants:
        run = next(run for run in bench.runs if run.variant == variant and run.rows_per_second == median[variant])
        ratio = f"{median[variant] / median['per-row']:.1f}x" if "per-row" in median else "n/a"
        lines.append(
            f"| {variant} | {run.rows:,} | {run.seconds:.2f} | {median[variant]:,.0f} | "
            f"{run.cpu_seconds / run.rows * 1e6:.0f}, {run.postgres_cpu_seconds / run.rows * 1e6:.0f} | "
            f"{run.rss_mb_before:.0f} -> {run.rss_mb_after:.0f} | {ratio} |"
        )
    lines += ["", f"claim plan (index plan: {uses_index(bench.plan)}):", bench.plan]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000, help="connections in the table (1,000,000)")
    parser.add_argument("--backlog", type=int, default=50_000, help="of which due now (50,000)")
    parser.add_argument("--page-size", type=int, help="the scan's page (default: SCAN_PAGE_SIZE's default)")
    parser.add_argument("--rounds", type=int, default=1, help="scans of the backlog, each variant in turn (1)")
    parser.add_argument("--baseline-rows", type=int, default=1000, help="rows the per-row baseline sends (1000)")
    parser.add_argument("--fillfactor", type=int, help="the table's fillfactor (the migrations': 85)")
    parser.add_argument(
        "--worker-seconds", type=float, default=0, help="then run a real worker on such a table this long (0: no)"
    )
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the topic (4)")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka (127.0.0.1:9092)")
    parser.add_argument(
        "--server-url", default=POSTGRES_URL, help="a Postgres database to connect to; the script creates its own"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    bench = asyncio.run(
        run_bench(
            args.server_url,
            args.bootstrap,
            rows=args.rows,
            backlog=args.backlog,
            page_size=args.page_size,
            rounds=args.rounds,
            partitions=args.partitions,
            baseline_rows=args.baseline_rows,
            fillfactor=args.fillfactor,
            log=True,
        )
    )
    sys.stdout.write(report(bench, args.rounds) + "\n")
    if args.worker_seconds:
        worker = asyncio.run(
            measure_worker_rss(
                args.server_url, args.bootstrap, rows=args.rows, backlog=args.backlog, seconds=args.worker_seconds
            )
        )
        sys.stdout.write(
            f"\nA worker on {args.rows:,} connections ({args.backlog:,} due), {args.worker_seconds:.0f} s: its scans "
            f"requested {worker['requested']:,}; RSS max {worker['worker_rss_mb_max']:.0f} MiB, "
            f"last {worker['worker_rss_mb_last']:.0f} MiB\n"
        )
    return 0 if uses_index(bench.plan) else 1


if __name__ == "__main__":
    sys.exit(main())
