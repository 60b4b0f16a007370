#!/usr/bin/env python3
"""Expiry-scan throughput: one acknowledged send per row (the old scan) against a page sent at once.

The scan (``stream_app.scheduler.scan_expiring``) reads a page of due connections, emits a
``token.expiring`` for each and marks the page, in one transaction. It used to await each
record's acknowledgement (``send_and_wait``) before queueing the next, so a page of 500 cost
500 broker round trips plus the producer's linger each; now the page is queued at once and
every acknowledgement is awaited together (``KafkaPublisher.send_many``).

The script creates a Postgres database of its own (dropped at the end) and a topic of its own
(deleted at the end), seeds ``--rows`` connections that are all due, and runs the real scan
with the real publisher against the real broker, once per variant and round:

- ``per-row``: the old emit, reimplemented here: ``KafkaPublisher.send`` (send_and_wait) per row;
- ``batched``: the service's emit: ``KafkaPublisher.send_many`` per page.

Between runs every row is made due again. Each run must emit every row and the topic must
grow by as many records, or the script fails. It prints rows/s per variant (the median over
``--rounds``) and the ratio to ``per-row``.

    .venv/bin/python benchmarks/bench_scan.py --rows 20000
    .venv/bin/python benchmarks/bench_scan.py --rows 5000 --rounds 3 --page-size 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import insert, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from schemas import TokenExpiring
from stream_app.clock import utc_now
from stream_app.crypto import TokenCipher, generate_key
from stream_app.db import Database
from stream_app.db.migrate import upgrade_to_head
from stream_app.db.models import ConnectionRow
from stream_app.publisher import KafkaPublisher, OutgoingRecord
from stream_app.scheduler import scan_expiring
from stream_app.settings import Settings

DEFAULT_SERVER = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+asyncpg://token_refresh:token_refresh@127.0.0.1:5432/token_refresh_test"
)
VARIANTS = ("per-row", "batched")
SEED_CHUNK = 2000

EmitMany = Callable[[list[TokenExpiring]], Awaitable[object]]


@dataclass
class Run:
    variant: str
    rows: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds


def per_row_emit(publisher: KafkaPublisher, topic: str) -> EmitMany:
    """The scan as it was: each record acknowledged before the next is queued."""

    async def emit_many(events: list[TokenExpiring]) -> None:
        for event in events:
            await publisher.send(topic, event.key.encode(), event.to_bytes())

    return emit_many


def batched_emit(publisher: KafkaPublisher, topic: str) -> EmitMany:
    """The scan as the worker runs it now (agents/scheduler.py)."""

    async def emit_many(events: list[TokenExpiring]) -> None:
        await publisher.send_many([OutgoingRecord(topic, event.key.encode(), event.to_bytes()) for event in events])

    return emit_many


async def administer(server_url: URL, statement: str) -> None:
    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql(statement)
    finally:
        await engine.dispose()


async def seed(database: Database, cipher: TokenCipher, rows: int) -> None:
    """``rows`` connections, all due now (as after an outage, or a burst of sign-ups)."""
    now = utc_now()
    for start in range(0, rows, SEED_CHUNK):
        values = []
        for index in range(start, min(rows, start + SEED_CHUNK)):
            user_id = uuid.uuid4()
            values.append(
                {
                    "id": uuid.uuid4(),
                    "user_id": user_id,
                    "platform": "spotify",
                    "access_token": cipher.encrypt(f"bench-access-{index}"),
                    "refresh_token": cipher.encrypt(f"bench-refresh-{index}"),
                    "token_expires_at": now + timedelta(minutes=2),
                    "status": "connected",
                    "connected_at": now,
                    "updated_at": now,
                    "version": 0,
                    "consecutive_failures": 0,
                    "token_lifetime_seconds": 3600,
                    "refresh_due_at": now - timedelta(seconds=index % 180),
                }
            )
        async with database.transaction() as session:
            await session.execute(insert(ConnectionRow), values)


async def make_due_again(database: Database) -> None:
    async with database.transaction() as session:
        await session.execute(update(ConnectionRow).values(refresh_requested_at=None))


async def records_on(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, partition) for partition in range(partitions)])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def measure(args: argparse.Namespace) -> list[Run]:
    server_url = make_url(args.server_url)
    suffix = uuid.uuid4().hex[:8]
    name = f"bench_scan_{suffix}"
    topic = f"bench-scan.{suffix}"
    key = generate_key()
    await administer(server_url, f'CREATE DATABASE "{name}"')
    database_url = server_url.set(database=name).render_as_string(hide_password=False)
    database = Database(database_url)
    admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap)
    await admin.start()
    settings = Settings(
        encryption_key=key,
        database_url=database_url,
        kafka_bootstrap_servers=args.bootstrap,
        scan_page_size=args.page_size,
    )
    publisher = KafkaPublisher(settings)
    runs: list[Run] = []
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=args.partitions, replication_factor=1)])
        await upgrade_to_head(database)
        await seed(database, TokenCipher(key), args.rows)
        emits = {"per-row": per_row_emit(publisher, topic), "batched": batched_emit(publisher, topic)}
        await publisher.send_many([OutgoingRecord(topic, b"warm-up", b"{}")])  # connect, learn metadata
        for _ in range(args.rounds):
            for variant in VARIANTS:
                await make_due_again(database)
                before = await records_on(args.bootstrap, topic, args.partitions)
                started = time.perf_counter()
                emitted = await scan_expiring(database, settings, emits[variant])
                seconds = time.perf_counter() - started
                published = await records_on(args.bootstrap, topic, args.partitions) - before
                if emitted != args.rows or published != args.rows:
                    raise SystemExit(f"{variant}: emitted {emitted}, topic grew by {published}, expected {args.rows}")
                runs.append(Run(variant, emitted, seconds))
                sys.stderr.write(f"  {variant:8} {emitted} rows in {seconds:.2f} s\n")
    finally:
        await publisher.stop()
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()
            await database.dispose()
            await administer(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return runs


def report(runs: Sequence[Run], args: argparse.Namespace) -> str:
    median = {
        variant: statistics.median_low([run.rows_per_second for run in runs if run.variant == variant])
        for variant in VARIANTS
    }
    seconds = {
        variant: statistics.median_high([run.seconds for run in runs if run.variant == variant]) for variant in VARIANTS
    }
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"1-min load {load:.2f}",
        f"{args.rows} due rows, page {args.page_size}, topic of {args.partitions} partitions, "
        f"median of {args.rounds} round(s)",
        "",
        "| scan emit | seconds | rows/s | vs per-row |",
        "|---|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        ratio = median[variant] / median["per-row"]
        lines.append(f"| {variant} | {seconds[variant]:.2f} | {median[variant]:,.0f} | {ratio:.1f}x |")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=20000, help="due connections to seed (20000)")
    parser.add_argument("--page-size", type=int, default=500, help="the scan's page (SCAN_PAGE_SIZE, 500)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each variant, in turn (1)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the topic (4)")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka (127.0.0.1:9092)")
    parser.add_argument(
        "--server-url", default=DEFAULT_SERVER, help="a Postgres database to connect to; the script creates its own"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    runs = asyncio.run(measure(args))
    sys.stdout.write(report(runs, args) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
