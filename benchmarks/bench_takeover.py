#!/usr/bin/env python3
"""The Node takeover's costs (docs/takeover.md): the expiry scan, writes in the seed's shape, and
``migrate --adopt``, on a large table, with and without migration 0008's trigger, and against
the alternative that finds unscheduled rows in the scan's query instead.

Three schemas, each in a database of its own (dropped at the end), seeded by
``bench_scan.seed`` (``--rows`` connections, ``--backlog`` of them due now), with ``--held`` of
the others held back (failure backoff after a provider outage: token expired, next attempt in
30 minutes, as the engine leaves such rows):

- ``0007``: before this work (the scan reads ``refresh_due_at``; seed-shaped writes are missed);
- ``0008 trigger``: the chosen design (the trigger keeps ``refresh_due_at`` right; the scan's
  query and index unchanged);
- ``LEAST index``: the alternative: no trigger; the scan orders and pages by
  ``LEAST(refresh_due_at, token_expires_at - 5 min)`` over an expression index, so a row
  whose ``refresh_due_at`` is missing or later than its expiry implies is found all the same.

The three databases are built first, then scanned round by round, one schema after the other
in each round (the load of a shared machine changes meanwhile): the scan of the backlog
(``bench_scan._scan_once``: the real ``scan_requests`` through the real broker; rows/s) and an
idle scan (nothing new due: what most scans are). Then four writes of ``--writes`` rows each,
timed on the server (EXPLAIN ANALYZE, rolled back): the Node callback's INSERT (seed columns
only), an operator's UPDATE of ``token_expires_at``, the engine's outcome UPDATE (expiry and
schedule together) and the scan's mark; on the trigger's schema, each also with the triggers
disabled, alternately, to isolate their cost. Last, whether a row the Node callback inserts
is scanned, and ``migrate --adopt`` of a seed-shaped table of ``--rows`` rows.

    .venv/bin/python benchmarks/bench_takeover.py --rows 1000000 --backlog 50000 --held 100000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import Select, bindparam, func, literal_column, select, tuple_
from sqlalchemy.types import DateTime, Integer, Uuid

from stream_app.clock import utc_now
from stream_app.crypto import generate_key
from stream_app.db import Database
from stream_app.db import scan as scan_module
from stream_app.db.migrate import adopt_and_upgrade, upgrade_to
from stream_app.publisher import KafkaPublisher, OutgoingRecord
from stream_app.scheduler import scan_requests
from stream_app.settings import Settings

REPO = Path(__file__).resolve().parents[1]
for path in (str(REPO), str(REPO / "benchmarks")):
    if path not in sys.path:
        sys.path.insert(0, path)
from bench_scan import _scan_once, make_due_again, seed  # noqa: E402

from tests.support.databases import POSTGRES_URL, administer, database_url, drop_database  # noqa: E402

VARIANTS = ("0007", "0008 trigger", "LEAST index")
_LEAST = "LEAST(refresh_due_at, token_expires_at - interval '300 seconds')"
LEAST_INDEX = (
    f"CREATE INDEX idx_platform_connections_scan_due ON platform_connections (({_LEAST}), id) "
    "WHERE status IN ('connected', 'token_expired') AND (refresh_due_at IS NOT NULL OR token_expires_at IS NOT NULL)"
)
HOLD = """
UPDATE platform_connections
SET token_expires_at = $2::timestamp - interval '10 minutes', refresh_due_at = $2::timestamp + interval '30 minutes',
    refresh_not_before = $2::timestamp + interval '30 minutes', consecutive_failures = 3
WHERE id IN (SELECT id FROM platform_connections WHERE refresh_due_at > $2::timestamp + interval '1 hour' LIMIT $1)
"""
# The writes, each on ``$1`` rows away from the backlog (times on the server, EXPLAIN ANALYZE).
NODE_INSERT = """
INSERT INTO platform_connections (user_id, platform, access_token, refresh_token, token_expires_at)
SELECT gen_random_uuid(), 'spotify', 'node-access-' || i, 'node-refresh-' || i,
       $2::timestamp + interval '1 hour'
FROM generate_series(1, $1) AS i
"""
OPERATOR_UPDATE = """
UPDATE platform_connections SET token_expires_at = token_expires_at - interval '50 minutes'
WHERE id IN (SELECT id FROM platform_connections WHERE status IN ('connected', 'token_expired')
             AND refresh_due_at > $2::timestamp + interval '2 hours' ORDER BY refresh_due_at, id LIMIT $1)
"""
ENGINE_UPDATE = """
UPDATE platform_connections SET token_expires_at = token_expires_at + interval '1 hour',
       refresh_due_at = refresh_due_at + interval '1 hour', last_sync_status = 'success', updated_at = $2::timestamp
WHERE id IN (SELECT id FROM platform_connections WHERE status IN ('connected', 'token_expired')
             AND refresh_due_at > $2::timestamp + interval '2 hours' ORDER BY refresh_due_at DESC, id DESC LIMIT $1)
"""
SCAN_MARK = """
UPDATE platform_connections SET refresh_requested_at = $2::timestamp
WHERE id IN (SELECT id FROM platform_connections WHERE status IN ('connected', 'token_expired')
             AND refresh_due_at > $2::timestamp + interval '2 hours' ORDER BY refresh_due_at, id LIMIT $1)
"""
WRITES = {
    "Node INSERT": NODE_INSERT,
    "operator UPDATE expiry": OPERATOR_UPDATE,
    "engine UPDATE": ENGINE_UPDATE,
    "scan mark UPDATE": SCAN_MARK,
}


@dataclass
class VariantRun:
    variant: str
    seed_seconds: float = 0.0
    scans: list[float] = field(default_factory=list)  # rows/s
    writes: dict[str, float] = field(default_factory=dict)  # ms on the server
    unscheduled_found: dict[str, bool] = field(default_factory=dict)
    # 0008 only: each write's median ms with the triggers enabled and disabled, same database.
    trigger_ab: dict[str, tuple[float, float]] = field(default_factory=dict)
    idle_scans_ms: list[float] = field(default_factory=list)


_SCAN_DUE_PAGE = scan_module.due_page


@functools.cache
def least_due_page(platforms: tuple[str, ...], after_cursor: bool) -> Select[Any]:
    """The alternative's page read: ``scan.due_page`` with LEAST(...) in place of refresh_due_at."""
    base = _SCAN_DUE_PAGE(platforms, False)
    due = func.least(literal_column("refresh_due_at"), literal_column("token_expires_at - interval '300 seconds'"))
    c = scan_module._c
    if base.whereclause is None:
        raise RuntimeError("the scan's page read has no WHERE clause")
    conditions = [
        c.status.in_([literal_column("'connected'"), literal_column("'token_expired'")]),
        literal_column("(refresh_due_at IS NOT NULL OR token_expires_at IS NOT NULL)"),
        due <= bindparam("due_by", type_=DateTime()),
        # The platform, the request mark, the hold and the lease, as the scan has them.
        *list(base.whereclause.clauses)[3:],
    ]
    if after_cursor:
        after = tuple_(bindparam("after_due", type_=DateTime()), bindparam("after_id", type_=Uuid()))
        conditions.append(tuple_(due, c.id) > after)
    return (
        select(c.id, c.user_id, c.platform, c.token_expires_at, due.label("refresh_due_at"), c.refresh_requested_at)
        .where(*conditions)
        .order_by(due, c.id)
        .limit(bindparam("limit", type_=Integer()))
        .with_for_update(skip_locked=True)
    )


async def _driver(database: Database, statement: str, *arguments: Any) -> Any:
    async with database.transaction() as session:
        raw = await (await session.connection()).get_raw_connection()
        return await raw.driver_connection.execute(statement, *arguments)  # type: ignore[union-attr]


async def _server_ms(database: Database, statement: str, *arguments: Any, triggers: bool = True) -> float:
    """Execution time on the server, its triggers included (EXPLAIN ANALYZE in a transaction
    of the driver's own, rolled back: the session's would begin only at its first statement)."""
    async with database.sessions() as session:
        raw = await (await session.connection()).get_raw_connection()
        driver: Any = raw.driver_connection
        transaction = driver.transaction()
        await transaction.start()
        try:
            if not triggers:
                await driver.execute("ALTER TABLE platform_connections DISABLE TRIGGER USER")
            plan = await driver.fetch(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", *arguments)
        finally:
            await transaction.rollback()
    value = plan[0][0]
    document: dict[str, Any] = (json.loads(value) if isinstance(value, str) else value)[0]
    return float(document["Execution Time"])  # triggers included


async def _trigger_ab(database: Database, writes: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Each write timed alternately with and without the triggers (DISABLE TRIGGER USER inside the
    rolled-back transaction): the difference is the triggers' cost, the rest being equal."""
    result = {}
    for label, statement in WRITES.items():
        timings: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(repeats):
            for enabled in (True, False):
                timings[enabled].append(await _server_ms(database, statement, writes, utc_now(), triggers=enabled))
        result[label] = (statistics.median(timings[True]), statistics.median(timings[False]))
    return result


async def _found_unscheduled(database: Database, settings: Settings, variant: str) -> bool:
    """Whether a row the Node callback writes (seed columns only, due now) is claimed by a scan."""
    user_id = uuid.uuid4()
    await _driver(
        database,
        "INSERT INTO platform_connections (user_id, platform, refresh_token, token_expires_at) "
        "VALUES ($1, 'spotify', 'x', $2::timestamp + interval '1 minute')",
        user_id,
        utc_now(),
    )
    claimed: list[uuid.UUID] = []

    async def collect(page: Any) -> None:
        claimed.extend(row.user_id for row in page.rows)

    with _scan_patch(variant):
        await scan_requests(database, settings, collect)
    return user_id in claimed


def _scan_patch(variant: str) -> Any:
    if variant == "LEAST index":
        return mock.patch.object(scan_module, "due_page", least_due_page)
    return mock.patch.object(scan_module, "due_page", scan_module.due_page)


@dataclass
class Prepared:
    """One variant's database, seeded, with its topic and publisher."""

    run: VariantRun
    name: str
    topic: str
    database: Database
    settings: Settings
    publisher: KafkaPublisher


async def prepare(variant: str, server_url: str, bootstrap: str, *, rows: int, backlog: int, held: int) -> Prepared:
    suffix = uuid.uuid4().hex[:8]
    name, topic = f"bench_takeover_{suffix}", f"bench-takeover.{suffix}"
    await administer(server_url, f'CREATE DATABASE "{name}"')
    url = database_url(server_url, name)
    database = Database(url)
    settings = Settings(encryption_key=generate_key(), database_url=url, kafka_bootstrap_servers=bootstrap)
    prepared = Prepared(VariantRun(variant), name, topic, database, settings, KafkaPublisher(settings))
    await upgrade_to(database, "0008" if variant == "0008 trigger" else "0007")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=settings.kafka_topic_partitions, replication_factor=1)]
        )
    finally:
        await admin.close()
    started = time.perf_counter()
    await seed(database, rows, backlog)
    if held:
        await _driver(database, HOLD, held, utc_now())
    if variant == "LEAST index":
        await _driver(database, LEAST_INDEX)
    await _driver(database, "VACUUM ANALYZE platform_connections")
    prepared.run.seed_seconds = time.perf_counter() - started
    _say(f"  {variant}: seeded in {prepared.run.seed_seconds:.1f} s")
    await prepared.publisher.send_many([OutgoingRecord(topic, b"warm-up", b"{}")])
    await database.warm_up()
    return prepared


async def release(prepared: Prepared, server_url: str, bootstrap: str) -> None:
    await prepared.publisher.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([prepared.topic])
    finally:
        await admin.close()
        await prepared.database.dispose()
        await drop(server_url, prepared.name)


async def idle_scan_ms(prepared: Prepared) -> float:
    """One scan when nothing new is due (the backlog requested a moment ago, the held rows held)."""

    async def nothing(page: Any) -> None:
        raise SystemExit(f"{prepared.run.variant}: an idle scan requested {len(page.rows)} rows")

    with _scan_patch(prepared.run.variant):
        started = time.perf_counter()
        await scan_requests(prepared.database, prepared.settings, nothing)
        return (time.perf_counter() - started) * 1000


async def run_all(
    variants: Sequence[str],
    server_url: str,
    bootstrap: str,
    *,
    rows: int,
    backlog: int,
    held: int,
    writes: int,
    rounds: int,
) -> list[VariantRun]:
    """Every variant's database first, then the scans round by round, variant after variant in
    each round (a machine whose load changes meanwhile weighs on every variant alike)."""
    prepared: list[Prepared] = []
    try:
        for variant in variants:
            prepared.append(await prepare(variant, server_url, bootstrap, rows=rows, backlog=backlog, held=held))
        for round_ in range(rounds):
            for one in prepared:
                await make_due_again(one.database)
                with _scan_patch(one.run.variant):
                    scan = await _scan_once("batched", one.database, one.settings, one.publisher, one.topic, backlog)
                one.run.scans.append(scan.rows_per_second)
                one.run.idle_scans_ms.append(await idle_scan_ms(one))
                _say(
                    f"  round {round_ + 1}: {one.run.variant} {scan.rows_per_second:,.0f} rows/s, "
                    f"idle scan {one.run.idle_scans_ms[-1]:,.0f} ms"
                )
        for one in prepared:
            for label, statement in WRITES.items():
                one.run.writes[label] = await _server_ms(one.database, statement, writes, utc_now())
            if one.run.variant == "0008 trigger":
                one.run.trigger_ab = await _trigger_ab(one.database, writes, repeats=7)
            one.run.unscheduled_found["Node INSERT"] = await _found_unscheduled(
                one.database, one.settings, one.run.variant
            )
    finally:
        for one in prepared:
            await release(one, server_url, bootstrap)
    return [one.run for one in prepared]


SEED_TABLE = """
CREATE TABLE platform_connections (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(), user_id UUID NOT NULL, platform TEXT NOT NULL,
  access_token TEXT, refresh_token TEXT, token_expires_at TIMESTAMP,
  status TEXT DEFAULT 'connected'
    CHECK (status IN ('connected', 'token_expired', 'needs_reauth', 'disconnected', 'error')),
  last_sync_status TEXT DEFAULT 'pending', last_sync_error TEXT,
  connected_at TIMESTAMP DEFAULT NOW(), updated_at TIMESTAMP DEFAULT NOW(), UNIQUE(user_id, platform));
CREATE INDEX idx_platform_connections_status ON platform_connections(status)
  WHERE status IN ('connected', 'token_expired');
CREATE INDEX idx_platform_connections_expiry ON platform_connections(token_expires_at)
  WHERE token_expires_at IS NOT NULL;
"""
SEED_ROWS = """
INSERT INTO platform_connections (user_id, platform, access_token, refresh_token, token_expires_at)
SELECT gen_random_uuid(), 'spotify', 'a' || i, 'r' || i, $2::timestamp + (i % 86400) * interval '1 second'
FROM generate_series(1, $1) AS i
"""


async def measure_adoption(server_url: str, rows: int) -> tuple[float, float]:
    """Seconds to seed a seed-shaped table of ``rows`` rows, and ``migrate --adopt``'s seconds."""
    name = f"bench_adopt_{uuid.uuid4().hex[:8]}"
    await administer(server_url, f'CREATE DATABASE "{name}"')
    database = Database(database_url(server_url, name))
    try:
        started = time.perf_counter()
        await _driver(database, SEED_TABLE)
        await _driver(database, SEED_ROWS, rows, utc_now())
        seeded = time.perf_counter() - started
        started = time.perf_counter()
        adoption = await adopt_and_upgrade(database)
        if adoption is None or adoption.rows != rows:
            raise SystemExit(f"adoption did not take the seed-shaped table of {rows} rows: {adoption}")
        return seeded, time.perf_counter() - started
    finally:
        await database.dispose()
        await drop(server_url, name)


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")


async def drop(server_url: str, name: str) -> None:
    """Drop the bench's database; an autovacuum worker on it (after the bench's writes) may
    refuse FORCE for a moment."""
    for attempt in range(10):
        try:
            await drop_database(server_url, name)
            return
        except Exception:
            if attempt == 9:
                raise
            await asyncio.sleep(1)


def report(runs: Sequence[VariantRun], adoption: tuple[float, float], args: argparse.Namespace) -> str:
    load = os.getloadavg()[0]
    lines = [
        f"{os.cpu_count()} cores; 1-min load {load:.2f} at the end; {args.rows:,} connections, {args.backlog:,} due, "
        f"{args.held:,} held back; writes of {args.writes:,} rows; {args.rounds} interleaved round(s)",
        "",
        "| schema | scan rows/s, median (all) | idle scan ms, median | Node INSERT ms | operator UPDATE expiry ms "
        "| engine UPDATE ms | scan mark UPDATE ms | a Node INSERT is scanned |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        all_scans = ", ".join(f"{r:,.0f}" for r in run.scans)
        lines.append(
            f"| {run.variant} | {statistics.median_low(run.scans):,.0f} ({all_scans}) | "
            f"{statistics.median_low(run.idle_scans_ms):,.0f} | "
            f"{run.writes['Node INSERT']:,.0f} | {run.writes['operator UPDATE expiry']:,.0f} | "
            f"{run.writes['engine UPDATE']:,.0f} | {run.writes['scan mark UPDATE']:,.0f} | "
            f"{'yes' if run.unscheduled_found['Node INSERT'] else 'no'} |"
        )
    for run in runs:
        if run.trigger_ab:
            lines += [
                "",
                f"The triggers' cost, {run.variant} schema, writes of {args.writes:,} rows, median of 7 alternations:",
                "",
                "| write | triggers on ms | off ms | cost per row µs |",
                "|---|---:|---:|---:|",
            ]
            lines += [
                f"| {label} | {on:,.0f} | {off:,.0f} | {(on - off) / args.writes * 1000:,.1f} |"
                for label, (on, off) in run.trigger_ab.items()
            ]
    lines += ["", f"migrate --adopt of a seed-shaped table of {args.rows:,} rows: {adoption[1]:.1f} s"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backlog", type=int, default=50_000)
    parser.add_argument("--held", type=int, default=100_000, help="rows held back (failure backoff)")
    parser.add_argument("--writes", type=int, default=10_000, help="rows of each timed write")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--server-url", default=POSTGRES_URL)
    args = parser.parse_args(argv)
    runs = asyncio.run(
        run_all(
            args.variants.split(","),
            args.server_url,
            args.bootstrap,
            rows=args.rows,
            backlog=args.backlog,
            held=args.held,
            writes=args.writes,
            rounds=args.rounds,
        )
    )
    adoption = asyncio.run(measure_adoption(args.server_url, args.rows))
    sys.stdout.write(report(runs, adoption, args) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
