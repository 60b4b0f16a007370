"""A platform throttling for minutes pins nothing: with few refreshes in flight per worker, its
long waits are recorded on the rows (not slept), and another platform's tokens that come due
meanwhile are refreshed at once."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from stream_app.clock import utc_now
from tests.integration.conftest import Stack
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def test_a_platform_throttling_for_minutes_delays_no_other_platform(stack: Stack) -> None:
    stack.worker.stop()
    env = {**stack.worker.env, "MAX_REFRESHES_IN_FLIGHT": "20", "HTTP_PORT": "0"}
    workers = [WorkerProcess(env, stack.worker.log_path.with_name(f"throttled-{n}.log")).start() for n in (1, 2)]
    state = stack.sandbox.state
    state.add_fault(
        {"platform": "x", "mode": "rate_limit", "retry_after": 300, "rate_limit_style": "x_reset", "count": 10_000}
    )
    try:
        for worker in workers:
            worker.wait_until_logged("Ready", timeout=90)
        throttled = [await stack.connect("x", expires_in=timedelta(minutes=2)) for _ in range(60)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len([r for r in state.history() if r.get("platform") == "x"]) < 60:
            await asyncio.sleep(0.2)
        # Every X connection has met its 300 s limit; now Spotify tokens come due.
        due = [await stack.connect("spotify", expires_in=timedelta(minutes=2)) for _ in range(8)]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(state.grant(g["grant_id"]).refresh_count for _, g in due):  # type: ignore[index, union-attr]
            await asyncio.sleep(0.2)
        assert all(state.grant(g["grant_id"]).refresh_count == 1 for _, g in due)  # type: ignore[index, union-attr]
        for user_id, grant in throttled:
            row = await stack.row(user_id, "x")
            assert row is not None and row.status == "connected"
            assert row.refresh_lease_owner is None  # nothing held while waiting
            assert row.refresh_not_before is not None and row.refresh_not_before > utc_now() + timedelta(seconds=200)
            assert state.grant(grant["grant_id"]).refresh_count == 0  # type: ignore[index, union-attr]
    finally:
        state.clear_faults()
        for worker in workers:
            worker.stop()
        stack.restart_worker("worker-after-throttling.log")
