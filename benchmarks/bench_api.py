#!/usr/bin/env python3
"""`get_valid_access_token` latency with fresh tokens: many callers at once, one process.

A caller of the Python API asks for a token that is fresh (nothing to refresh) far more often
than for one that is due. That call used to be a pooled checkout, a pre-ping, BEGIN, one
SELECT and ROLLBACK each time, queued behind the session gate: at 100 callers at once, p99
was ~0.5 s. Now a process-local cache of the sealed row answers it (stream_app/token_cache.py,
TOKEN_CACHE_TTL_SECONDS; docs/api-latency.md has the trade-off).

``measure_api`` seeds its own connections (fresh one-hour tokens) in a database that is
already migrated, builds a ``TokenService`` on it, warms it with one call per connection, then
keeps ``concurrency`` callers busy until ``calls`` calls have answered, checks every answer,
and removes its connections. ``token_cache_ttl_seconds=0`` turns the cache off: every call
reads its row.

The command line creates a Postgres database of its own (dropped at the end), measures the
service with the cache off and on, in turns, and prints the medians and ratios of one run:

    .venv/bin/python benchmarks/bench_api.py
    .venv/bin/python benchmarks/bench_api.py --calls 5000 --concurrency 200 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert

from stream_app.clock import utc_now
from stream_app.crypto import TokenBinding, TokenCipher, generate_key
from stream_app.db import Database
from stream_app.db.models import ConnectionRow
from stream_app.service import TokenService
from stream_app.settings import Settings

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the script's own folder is on the path, not the repository
    sys.path.insert(0, str(REPO))
from tests.support.databases import POSTGRES_URL, migrated_database  # noqa: E402  # the suite's helpers

PLATFORM = "spotify"


@dataclass(frozen=True)
class Variant:
    label: str
    token_cache_ttl_seconds: float | None  # None: the setting's default
    ping_after_idle_seconds: float | None  # None: the Database's default; 0: a ping per checkout
    warm_up: bool = True


VARIANTS = (
    Variant("before: no cache, a ping per checkout", 0.0, 0.0),
    Variant("no cache, ping after 1 s idle", 0.0, None),
    Variant("cache (default TTL), ping after 1 s idle", None, None),
    Variant("the same, cold: no warm-up call", None, None, warm_up=False),
)


async def measure_api(
    database_url: str,
    encryption_key: str,
    *,
    calls: int = 2000,
    concurrency: int = 100,
    connections: int = 100,
    token_cache_ttl_seconds: float | None = None,
    ping_after_idle_seconds: float | None = None,
    warm_up: bool = True,
) -> dict[str, float]:
    """p50_ms, p99_ms and calls_per_second of ``calls`` fresh-token calls, ``concurrency`` at once,
    spread over ``connections`` connections seeded here (and removed at the end). By default the
    service runs as configured; ``token_cache_ttl_seconds=0`` turns its cache off and
    ``ping_after_idle_seconds=0`` pings every pooled connection at checkout (pool_pre_ping).
    Without ``warm_up`` the measured calls include each connection's first (its pool's and
    its cache's cold start)."""
    overrides: dict[str, Any] = {"encryption_key": encryption_key, "database_url": database_url}
    if token_cache_ttl_seconds is not None:
        overrides["token_cache_ttl_seconds"] = token_cache_ttl_seconds
    settings = Settings(**overrides)
    database = None
    if ping_after_idle_seconds is not None:
        size, overflow = settings.pool_size()
        database = Database(
            database_url, pool_size=size, max_overflow=overflow, ping_after_idle_seconds=ping_after_idle_seconds
        )
    cipher = TokenCipher(encryption_key)
    expected = await _seed(Database(database_url), cipher, connections)
    users = list(expected)
    latencies: list[float] = []
    try:
        async with TokenService(settings, database=database) as service:
            for user_id in users if warm_up else ():  # the pool's connections, and the cache
                await _checked_call(service, user_id, expected[user_id])
            issued = iter(range(calls))
            gc.collect()  # the setup's garbage is not collected inside a measured call

            async def caller() -> None:
                for index in issued:
                    user_id = users[index % len(users)]
                    started = time.perf_counter()
                    token = await service.get_valid_access_token(user_id, PLATFORM)
                    latencies.append(time.perf_counter() - started)
                    if token != expected[user_id]:
                        raise RuntimeError(f"call {index} got the wrong token")

            started = time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
    finally:
        await _remove(Database(database_url), users)
    latencies.sort()
    return {
        "p50_ms": 1000 * _percentile(latencies, 0.50),
        "p99_ms": 1000 * _percentile(latencies, 0.99),
        "calls_per_second": len(latencies) / elapsed,
    }


async def _checked_call(service: TokenService, user_id: uuid.UUID, expected: str) -> None:
    if await service.get_valid_access_token(user_id, PLATFORM) != expected:
        raise RuntimeError("the warm-up call got the wrong token")


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of an ascending sequence."""
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


async def _seed(database: Database, cipher: TokenCipher, count: int) -> dict[uuid.UUID, str]:
    """``count`` connections whose tokens are fresh for an hour; user id -> plain access token."""
    now = utc_now()
    plain: dict[uuid.UUID, str] = {}
    values = []
    for index in range(count):
        user_id = uuid.uuid4()
        plain[user_id] = f"bench-access-{index}-{uuid.uuid4().hex}"
        values.append(
            {
                "user_id": user_id,
                "platform": PLATFORM,
                "id": uuid.uuid4(),
                "access_token": cipher.encrypt(plain[user_id], TokenBinding(user_id, PLATFORM, "access_token")),
                "refresh_token": cipher.encrypt(f"refresh-{index}", TokenBinding(user_id, PLATFORM, "refresh_token")),
                "token_expires_at": now + timedelta(hours=1),
                "token_lifetime_seconds": 3600,
                "refresh_due_at": now + timedelta(minutes=55),
                "status": "connected",
                "connected_at": now,
                "updated_at": now,
                "version": 0,
                "consecutive_failures": 0,
            }
        )
    try:
        async with database.transaction() as session:
            await session.execute(insert(ConnectionRow), values)
    finally:
        await database.dispose()
    return plain


async def _remove(database: Database, users: Sequence[uuid.UUID]) -> None:
    try:
        async with database.transaction() as session:
            await session.execute(delete(ConnectionRow).where(ConnectionRow.user_id.in_(users)))
    finally:
        await database.dispose()


async def run(args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    """Every variant ``args.rounds`` times, in turns, in a database of the script's own."""
    key = generate_key()
    results: dict[str, list[dict[str, float]]] = {variant.label: [] for variant in VARIANTS}
    async with migrated_database(args.server_url, f"bench_api_{uuid.uuid4().hex[:8]}") as database_url:
        for round_number in range(1, args.rounds + 1):
            for variant in VARIANTS:
                result = await measure_api(
                    database_url,
                    key,
                    calls=args.calls,
                    concurrency=args.concurrency,
                    connections=args.connections,
                    token_cache_ttl_seconds=variant.token_cache_ttl_seconds,
                    ping_after_idle_seconds=variant.ping_after_idle_seconds,
                    warm_up=variant.warm_up,
                )
                results[variant.label].append(result)
                sys.stderr.write(
                    f"  round {round_number} {variant.label:42} p50 {result['p50_ms']:8.3f} ms  "
                    f"p99 {result['p99_ms']:8.3f} ms  {result['calls_per_second']:9,.0f} calls/s\n"
                )
    return results


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> str:
    median = {
        label: {metric: statistics.median(run[metric] for run in runs) for metric in runs[0]}
        for label, runs in results.items()
    }
    baseline = median[VARIANTS[0].label]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"1-min load {load:.2f}",
        f"{args.calls} calls, {args.concurrency} at once, over {args.connections} fresh connections; "
        f"median of {args.rounds} round(s)",
        "",
        "| get_valid_access_token, fresh token | p50 ms | p99 ms | calls/s | before's p99 / p99 | calls/s / before's |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, values in median.items():
        lines.append(
            f"| {label} | {values['p50_ms']:.3f} | {values['p99_ms']:.3f} | {values['calls_per_second']:,.0f} | "
            f"{baseline['p99_ms'] / values['p99_ms']:,.1f} | "
            f"{values['calls_per_second'] / baseline['calls_per_second']:,.1f} |"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000, help="calls measured per run (2000)")
    parser.add_argument("--concurrency", type=int, default=100, help="callers at once (100)")
    parser.add_argument("--connections", type=int, default=100, help="connections the calls spread over (100)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant, in turns (3)")
    parser.add_argument(
        "--server-url", default=POSTGRES_URL, help="a Postgres database to connect to; the script creates its own"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    results = asyncio.run(run(args))
    sys.stdout.write(report(results, args) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
