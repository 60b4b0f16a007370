#!/usr/bin/env python3
"""End to end: refreshes per second of the service against the raw limit and a naive loop.

One table, medians of ``--repeats``, every row measured in the same run against the same
provider sandbox (20 ms per answer), 100 requests in flight, N connections each refreshed once:

- raw: aiohttp alone hammering the sandbox token endpoint (the 1.00 reference);
- authlib: a plain Authlib ``AsyncOAuth2Client`` loop with plain SQL (semaphore of 100);
- serial: the seed's loop, one connection at a time;
- burst: the service (one real worker process), N due ``connection.created`` published at once;
- wave: the service, N stored connections coming due at once, requested by its scan.

The run starts its own Kafka broker (:29092, state in .local/bench/kafka), its own database on
the local Postgres cluster and the sandbox, and removes them at the end (unless --keep).

    .venv/bin/python benchmarks/bench_e2e.py                          # everything (~15 min)
    .venv/bin/python benchmarks/bench_e2e.py --only raw,burst,wave    # the service against the limit
    .venv/bin/python benchmarks/bench_e2e.py --only wave --connections 500 --repeats 1
    .venv/bin/python benchmarks/bench_e2e.py --bootstrap 127.0.0.1:9092   # use a running broker

docs/benchmarks.md explains the method and keeps the latest table.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from e2e.borrowed import REPO
from e2e.render import render
from e2e.runner import PATHS, Options, Report, run


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in _csv(text))


def parse(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=3000, help="connections each path refreshes (3000)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each path; the table shows medians (3)")
    parser.add_argument("--in-flight", type=int, default=100, help="requests in flight for every path (100)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the sandbox's answer time (20)")
    parser.add_argument("--only", type=_csv, default=PATHS, help=f"comma-separated parts: {','.join(PATHS)}")
    parser.add_argument("--bootstrap", default=None, help="use this running broker instead of starting one")
    parser.add_argument("--kafka-port", type=int, default=29092, help="port of the run's own broker (29092)")
    parser.add_argument("--server-url", default=None, help="Postgres server URL (default: postgres_local.py start)")
    parser.add_argument("--sandbox-port", type=int, default=0, help="sandbox port (0: a free one)")
    parser.add_argument("--scan-interval", type=float, default=5.0, help="the worker's SCAN_INTERVAL_SECONDS (5)")
    parser.add_argument("--max-in-flight", type=int, default=None, help="MAX_REFRESHES_IN_FLIGHT (service default)")
    parser.add_argument("--scaling-workers", type=_ints, default=(1, 2, 4), help="worker counts to scale over")
    parser.add_argument("--inflight-sweep", type=_ints, default=(25, 100, 400), help="in-flight values to plot")
    parser.add_argument("--sweep-repeats", type=int, default=1, help="repeats of each scaling/in-flight point (1)")
    parser.add_argument("--api-calls", type=int, default=2000, help="calls of the API row (2000)")
    parser.add_argument("--scan-rows", type=int, default=1_000_000, help="connections of the scan row (1,000,000)")
    parser.add_argument("--scan-backlog", type=int, default=50_000, help="due ones among them (50,000)")
    parser.add_argument("--plots-dir", type=Path, default=REPO / "docs", help="where the PNG plots go (docs/)")
    parser.add_argument(
        "--code",
        default=None,
        help="a source tree (e.g. `git archive` of a commit) whose stream_app the workers run; default: this one",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and the broker's state")
    args = parser.parse_args(argv)
    unknown = set(args.only) - set(PATHS)
    if unknown:
        parser.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}; choose from {','.join(PATHS)}")
    return Options(
        connections=args.connections,
        repeats=args.repeats,
        in_flight=args.in_flight,
        latency_ms=args.latency_ms,
        only=args.only,
        bootstrap=args.bootstrap,
        kafka_port=args.kafka_port,
        server_url=args.server_url,
        sandbox_port=args.sandbox_port,
        scan_interval=args.scan_interval,
        max_in_flight=args.max_in_flight,
        scaling_workers=args.scaling_workers,
        inflight_sweep=args.inflight_sweep,
        sweep_repeats=args.sweep_repeats,
        api_calls=args.api_calls,
        scan_rows=args.scan_rows,
        scan_backlog=args.scan_backlog,
        code=args.code,
        plots_dir=args.plots_dir,
        keep=args.keep,
    )


async def _until_done_or_stopped(options: Options) -> Report:
    """SIGTERM (and SIGINT, even in a background job) cancel the run, so it still stops its
    workers, sandbox and broker and drops its database."""
    task = asyncio.ensure_future(run(options))
    loop = asyncio.get_running_loop()
    for stop in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stop, task.cancel)
    return await task


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    report = asyncio.run(_until_done_or_stopped(options))
    sys.stdout.write(render(report, options) + "\n")
    return 1 if report.leaks != (0, 0) else 0


if __name__ == "__main__":
    sys.exit(main())
