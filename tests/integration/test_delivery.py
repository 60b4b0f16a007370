"""Every state change is published at least once with a stable event_id, even when the worker
dies between the database commit and the send, or between the send and marking it sent."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from stream_app.failpoints import EXIT_CODE
from tests.integration.conftest import Stack
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def _with_failpoint(stack: Stack, name: str, log_name: str) -> WorkerProcess:
    stack.worker.stop()
    stack.worker = WorkerProcess({**stack.worker.env, "FAILPOINTS": name}, stack.worker.log_path.with_name(log_name))
    return stack.worker.start()


@pytest.mark.parametrize("failpoint", ["after_outbox_commit", "after_outbox_send"])
async def test_outcome_survives_a_crash_around_the_send(stack: Stack, failpoint: str) -> None:
    crashing = _with_failpoint(stack, failpoint, f"worker-{failpoint}.log")
    crashing.wait_until_logged("Ready", timeout=90)
    async with stack.reader("token.refreshed") as reader:
        user_id, grant = await stack.connect("discord", expires_in=timedelta(minutes=2))
        assert crashing.process is not None
        assert crashing.process.wait(timeout=60) == EXIT_CODE

        del crashing.env["FAILPOINTS"]
        stack.restart_worker(f"worker-after-{failpoint}.log")
        event = await reader.wait_for(lambda _t, e: e.get("user_id") == str(user_id), timeout=60)
        await reader.drain(3)

    assert event["event_type"] == "token.refreshed"
    copies = [json.loads(value or b"") for _t, _k, value in reader.records if str(user_id).encode() in (value or b"")]
    # At least once; a copy sent again after the crash carries the same event_id.
    assert {copy["event_id"] for copy in copies} == {event["event_id"]}
    truth = stack.sandbox.state.grant(grant["grant_id"])
    assert truth.refresh_count == 1  # the redelivered request found the token fresh
    row = await stack.row(user_id, "discord")
    assert row is not None and stack.cipher.decrypt_column(row, "refresh_token") == truth.live_refresh_token
