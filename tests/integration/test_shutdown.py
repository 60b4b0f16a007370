"""A refresh request for a connection another process is refreshing is answered by that
refresh: the worker acks it at once instead of waiting on the other's lease, so neither its
partition's commits, nor a rebalance, nor a shutdown waits for another process."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from aiokafka import TopicPartition
from sqlalchemy import update

from agents.batch_consumer import refresh_group_id
from schemas import TokenExpiring
from stream_app.db import ConnectionRow, Database
from stream_app.db.clock import db_now
from tests.integration.conftest import Stack
from tests.support.kafka import committed_offset, produce_at

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def test_a_request_for_a_connection_leased_elsewhere_holds_neither_offsets_nor_shutdown(stack: Stack) -> None:
    user_id, grant = await stack.connect("spotify", expires_in=timedelta(hours=1))  # not due
    deadline = time.monotonic() + 60
    while await stack.row(user_id, "spotify") is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    database = Database(stack.database_url)
    try:
        async with database.transaction() as session:  # another process is refreshing it, for minutes
            await session.execute(
                update(ConnectionRow)
                .where(ConnectionRow.user_id == user_id)
                .values(refresh_lease_owner="another-process", refresh_lease_expires_at=db_now(600))
            )
    finally:
        await database.dispose()
    request = TokenExpiring(user_id=user_id, platform="spotify", token_expires_at=None, reason="manual")
    [sent] = await produce_at(
        stack.bootstrap, stack.topics["token.expiring"], [(request.key.encode(), request.to_bytes())]
    )

    tp = TopicPartition(sent.topic, sent.partition)
    group = refresh_group_id(stack.worker.env["KAFKA_APP_ID"])  # token.expiring
    deadline = time.monotonic() + 30
    while (committed := await committed_offset(stack.bootstrap, group, tp)) <= sent.offset:
        assert time.monotonic() < deadline, f"committed offset {committed} never passed {sent.offset}"
        await asyncio.sleep(0.5)
    assert stack.sandbox.state.grant(grant["grant_id"]).refresh_count == 0  # type: ignore[index, union-attr]

    started = time.monotonic()
    stack.worker.stop(timeout=60)
    assert time.monotonic() - started < 15  # a graceful stop, not a kill after a timeout
    assert stack.worker.process is not None and stack.worker.process.returncode == 0
    stack.restart_worker("worker-after-stop.log").wait_until_logged("Ready", timeout=90)
