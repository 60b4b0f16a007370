"""Many refreshes in flight: a long rate-limit wait stalls nobody else, and a worker killed
with refreshes in flight loses none of them."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from schemas import TokenExpiring
from stream_app.db import Database
from tests.integration.conftest import Stack
from tests.support.connections import seed_connection
from tests.support.kafka import produce

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

PARTITIONS = list(range(4))


def partition_of(user_id: uuid.UUID, platform: str) -> int:
    key = f"{user_id}:{platform}".encode()
    return DefaultPartitioner()(key, PARTITIONS, PARTITIONS)


def refreshed(user_id: uuid.UUID) -> Any:
    return lambda _topic, e: e.get("user_id") == str(user_id) and e["event_type"] == "token.refreshed"


async def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_a_long_retry_after_stalls_neither_its_partition_nor_its_platform(stack: Stack) -> None:
    wait = 15.0  # the same code path as Retry-After: 60; the arithmetic is unit-tested
    stack.sandbox.state.add_fault(
        {"platform": "spotify", "mode": "rate_limit", "retry_after": wait, "rate_limit_style": "retry_after_seconds"}
    )
    async with stack.reader("token.refreshed", "token.refresh_failed", "token.needs_reauth") as reader:
        limited, grant = await stack.connect("spotify", expires_in=timedelta(minutes=2))
        await wait_until(
            lambda: any(
                r.get("grant_id") == grant["grant_id"] and r.get("status") == 429 for r in stack.sandbox.state.history()
            ),
            30,
            "the rate-limited answer",
        )
        limited_at = time.monotonic()
        others = []
        while len(others) < 6 or partition_of(limited, "spotify") not in {partition_of(u, p) for u, p in others}:
            platform = ("spotify", "discord", "youtube")[len(others) % 3]
            user_id, _ = await stack.connect(platform, expires_in=timedelta(minutes=2))
            others.append((user_id, platform))
        for user_id, _platform in others:
            await reader.wait_for(refreshed(user_id), timeout=wait - 3)
        # Everyone else is done, including a Spotify connection in the limited one's partition,
        # while the limited one still waits.
        assert time.monotonic() - limited_at < wait
        assert not [r for r in reader.records if str(limited).encode() in (r[2] or b"")]

        event = await reader.wait_for(refreshed(limited), timeout=wait + 15)
    assert time.monotonic() - limited_at >= wait - 0.5
    assert event["attempts"] == 1  # a 429 is a wait, not an attempt


async def test_worker_killed_with_refreshes_in_flight_loses_none(stack: Stack) -> None:
    state = stack.sandbox.state
    state.latency = 3.0  # every token request takes 3 s, so many are in flight at the kill
    try:
        async with stack.reader("token.refreshed") as reader:
            users = []
            for _ in range(20):
                user_id, grant = await stack.connect("spotify", expires_in=timedelta(minutes=2))
                users.append((user_id, grant["grant_id"]))
            await wait_until(lambda: sum(state.grant(g).in_flight for _, g in users) >= 10, 30, "refreshes in flight")
            stack.worker.kill()
            done_before_kill = {u for u, _ in users if any(str(u).encode() in (r[2] or b"") for r in reader.records)}
            assert len(done_before_kill) < len(users)

            state.latency = 0.0
            stack.restart_worker("worker-after-kill.log").wait_until_logged("Ready", timeout=90)
            # Redelivered from Kafka (the scan would only re-request them after half the buffer).
            for user_id, _ in users:
                await reader.wait_for(refreshed(user_id), timeout=60)
    finally:
        state.latency = 0.0

    for user_id, grant_id in users:
        row = await stack.row(user_id, "spotify")
        truth = state.grant(grant_id)
        assert row is not None and row.status == "connected"
        assert stack.cipher.decrypt_column(row, "access_token") == truth.live_access_token
        assert stack.cipher.decrypt_column(row, "refresh_token") == truth.live_refresh_token


async def test_provider_latency_not_the_agent_loop_bounds_throughput(stack: Stack) -> None:
    """With every token request taking 3 s, one worker has (nearly) all 200 requests in flight.
    The tokens are not due (manual requests force the refresh), so the worker's own scan
    refreshes none of them first."""
    database = Database(stack.database_url)
    try:
        seeded = [
            await seed_connection(
                database,
                stack.cipher,
                stack.sandbox,
                ("spotify", "youtube", "gmail", "linkedin")[n % 4],
                expires_in=timedelta(hours=1),
            )
            for n in range(200)
        ]
    finally:
        await database.dispose()
    state = stack.sandbox.state
    grants = [state.grant(grant["grant_id"]) for _, grant in seeded]
    requests = [
        TokenExpiring(user_id=user_id, platform=grant["platform"], token_expires_at=None, reason="manual")
        for user_id, grant in seeded
    ]
    state.latency = 3.0
    peak = 0
    try:
        await produce(
            stack.bootstrap, stack.topics["token.expiring"], [(r.key.encode(), r.to_bytes()) for r in requests]
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(grant.refresh_count for grant in grants):
            peak = max(peak, sum(grant.in_flight for grant in grants))
            await asyncio.sleep(0.02)
    finally:
        state.latency = 0.0
    assert all(grant.refresh_count == 1 for grant in grants)
    assert peak >= 150, peak
