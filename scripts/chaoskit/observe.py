"""What the run watches while it goes: the database every few seconds, /metrics now and then."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg  # type: ignore[import-untyped]
import httpx

SAMPLE_SECONDS = 5.0
# A stored access token seen expired by more than this counts as an expiry (a sample every
# SAMPLE_SECONDS: one expired for 10 s is always seen, one for under 5 s may not be).
EXPIRY_GRACE_SECONDS = 5.0

ConnectionKey = tuple[str, str]  # (user_id, platform)


def epoch(value: datetime | None) -> float | None:
    """A naive UTC timestamp of the database as epoch seconds."""
    return None if value is None else value.replace(tzinfo=UTC).timestamp()


@dataclass
class DatabaseSamples:
    # connection -> {token expiry (epoch) observed passed by more than the grace: when first seen}
    expiries: dict[ConnectionKey, dict[float, float]] = field(default_factory=dict)
    # connection -> token expiries (epoch) of refreshed states committed (last_refreshed_at set)
    refreshed_states: dict[ConnectionKey, set[float]] = field(default_factory=dict)
    samples: int = 0
    failed_samples: int = 0

    def observe(self, rows: list[asyncpg.Record], now: float) -> None:
        for row in rows:
            key = (str(row["user_id"]), row["platform"])
            expires = epoch(row["token_expires_at"])
            if expires is None:
                continue
            if now - expires > EXPIRY_GRACE_SECONDS:
                self.expiries.setdefault(key, {}).setdefault(expires, now)
            if row["last_refreshed_at"] is not None:
                self.refreshed_states.setdefault(key, set()).add(expires)
        self.samples += 1


async def sample_database(dsn: str, samples: DatabaseSamples, stop: asyncio.Event) -> None:
    """Reads every connection row each SAMPLE_SECONDS (reads pass the pool-exhaustion lock,
    which blocks writes only); a restart of Postgres costs a few failed samples."""
    connection: asyncpg.Connection | None = None
    while not stop.is_set():
        try:
            if connection is None or connection.is_closed():
                connection = await asyncpg.connect(dsn, timeout=5)
            rows = await connection.fetch(
                "SELECT user_id, platform, token_expires_at, last_refreshed_at FROM platform_connections",
                timeout=10,
            )
            samples.observe(rows, time.time())
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            samples.failed_samples += 1
            connection = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)
    if connection is not None and not connection.is_closed():
        await connection.close()


async def scrape_metrics(urls: list[str], texts: list[tuple[str, str]], stop: asyncio.Event, every: float) -> None:
    """Keeps every /metrics page scraped (for the plain-text search)."""
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            for url in urls:
                with contextlib.suppress(httpx.HTTPError):
                    texts.append((url, (await client.get(url)).text))
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
