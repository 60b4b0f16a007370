"""Two workers share the partitions; killing one (kill -9) mid-run moves its work to the other,
and every connection still ends refreshed exactly once in our state and on our topics."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import pytest

from tests.integration.conftest import Stack
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def test_killing_one_of_two_workers_loses_nothing_and_duplicates_nothing(stack: Stack) -> None:
    env = {**stack.worker.env, "HTTP_PORT": "0"}  # one HTTP port per host
    second = WorkerProcess(env, stack.worker.log_path.with_name("worker-second.log")).start()
    state = stack.sandbox.state
    try:
        second.wait_until_logged("Ready", timeout=90)
        await asyncio.sleep(3)  # the group settles with both members
        state.latency = 1.0
        async with stack.reader("token.refreshed", "token.needs_reauth", "token.refresh_failed") as reader:
            users = []
            for index in range(40):
                platform = ("spotify", "youtube")[index % 2]
                user_id, grant = await stack.connect(platform, expires_in=timedelta(minutes=2))
                users.append((user_id, platform, grant["grant_id"]))
            deadline = time.monotonic() + 30
            while sum(state.grant(g).in_flight for _u, _p, g in users) < 5 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            stack.worker.kill()  # the first worker dies with refreshes in flight
            state.latency = 0.0
            for user_id, _platform, _grant in users:
                await reader.wait_for(lambda _t, e, u=str(user_id): e.get("user_id") == u, timeout=90)
            await reader.drain(3)
    finally:
        state.latency = 0.0
        second.stop()

    assert "Setting newly assigned partitions" in second.log()
    for user_id, platform, grant_id in users:
        events = [json.loads(v or b"") for _t, _k, v in reader.records if str(user_id).encode() in (v or b"")]
        assert {e["event_type"] for e in events} == {"token.refreshed"}, events
        assert len({e["event_id"] for e in events}) == 1  # one state change, published at least once
        row = await stack.row(user_id, platform)
        truth = state.grant(grant_id)
        assert row is not None and row.status == "connected"
        assert stack.cipher.decrypt_column(row, "access_token") == truth.live_access_token
        assert stack.cipher.decrypt_column(row, "refresh_token") == truth.live_refresh_token
