"""`make chaos`: the real workers against the provider sandbox while things break; one table.

Two worker processes, thousands of connections (Discord single-use, Spotify, Google) with
60-second tokens; provider faults at random, one platform down, one throttling; kill -9 of
each worker, a Kafka crash, a Postgres restart, an exhausted database pool; then a clean
round, and figures from ground truth that must all be 0. docs/reliability.md explains each.

    .venv/bin/python scripts/chaos.py                  # 2,000 connections, 10-minute chaos phase
    .venv/bin/python scripts/chaos.py --quick          # 200 connections, 2.5 minutes
    .venv/bin/python scripts/chaos.py --connections 500 --minutes 5 --keep

It brings its own Kafka broker (:19092) and Postgres cluster (15/chaos, :55432), so crashing
them never disturbs the shared services; everything is removed at the end unless --keep.
Exit status 0 only if every figure is 0.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from chaoskit.run import ChaosRun, Options, say


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the chaos phase")
    parser.add_argument("--quick", action="store_true", help="200 connections, a 2.5-minute chaos phase")
    parser.add_argument("--lifetime", type=int, default=60, help="access token lifetime (s)")
    parser.add_argument("--buffer", type=float, default=30.0, help="REFRESH_BUFFER_SECONDS of the workers")
    parser.add_argument("--down", default="google", help="platform fully down for a minute")
    parser.add_argument("--throttle", default="discord", help="platform throttling for five minutes")
    parser.add_argument("--keep", action="store_true", help="keep the database, Kafka state and cluster")
    parser.add_argument("--kafka-port", type=int, default=19092)
    parser.add_argument("--postgres-port", type=int, default=55432)
    parser.add_argument("--sandbox-port", type=int, default=18099)
    args = parser.parse_args(argv)
    if args.quick:
        args.connections, args.minutes = 200, 2.5
    return Options(
        connections=args.connections,
        minutes=args.minutes,
        lifetime=args.lifetime,
        buffer=args.buffer,
        down=args.down,
        throttle=args.throttle,
        keep=args.keep,
        kafka_port=args.kafka_port,
        postgres_port=args.postgres_port,
        sandbox_port=args.sandbox_port,
        metrics_ports=(19464, 19465),
    )


async def main(options: Options) -> int:
    run = ChaosRun(options)
    try:
        results = await run.run()
    finally:
        await run.cleanup()
    failing = [f.name for f in results if f.count and not f.informational]
    say("every figure is 0" if not failing else f"non-zero: {', '.join(failing)}")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
