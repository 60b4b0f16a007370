"""Infrastructure events of the timeline, each recorded with when it really started and ended."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from .infra import Kafka, Postgres
from .processes import Worker
from .timeline import POOL_HOLD_SECONDS


@dataclass
class Happened:
    name: str
    started_at: float
    ended_at: float
    detail: str


async def kill_and_restart(worker: Worker) -> str:
    pid = worker.kill9()
    await asyncio.sleep(2)  # a supervisor's restart delay
    worker.start()
    await asyncio.to_thread(worker.wait_ready)
    return f"pid {pid} killed; restarted and Ready"


async def crash_kafka(kafka: Kafka) -> str:
    pid = await asyncio.to_thread(kafka.crash)
    crashed = time.monotonic()
    await asyncio.to_thread(kafka.start)
    return f"broker pid {pid} killed; serving again after {time.monotonic() - crashed:.0f}s"


async def restart_postgres(postgres: Postgres) -> str:
    await asyncio.to_thread(postgres.restart)
    return f"pg_ctlcluster {postgres.version} {postgres.name} restart -m fast"


async def exhaust_pool(dsn: str, database: str) -> str:
    """Hold an EXCLUSIVE lock on platform_connections (reads pass, writes queue) for longer
    than SQLAlchemy's 30 s pool_timeout: every worker write queues on it holding a pooled
    connection, the pools (10 + 10 overflow each) run dry and further checkouts time out."""
    connection = await asyncpg.connect(dsn)
    try:
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute("LOCK TABLE platform_connections IN EXCLUSIVE MODE")
        await asyncio.sleep(POOL_HOLD_SECONDS - 12)
        queued = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'", database
        )
        await asyncio.sleep(12)
        await transaction.rollback()
    finally:
        await connection.close()
    return (
        f"lock held {POOL_HOLD_SECONDS:.0f}s; {queued} worker sessions queued on it at +{POOL_HOLD_SECONDS - 12:.0f}s"
    )


async def happen(name: str, action: Coroutine[Any, Any, str]) -> Happened:
    started = time.time()
    try:
        detail = await action
    except Exception as exc:  # recorded, and the run goes on: the figures will tell
        detail = f"FAILED: {type(exc).__name__}: {exc}"
    return Happened(name, started, time.time(), detail)
