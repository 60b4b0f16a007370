"""The worker's scan emit: a page goes out as records in one call; when the broker does not
take it in time, the page's connections are refreshed in this process instead."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError

from agents.local import LocalRefreshes
from agents.scheduler import publish_or_refresh_here
from stream_app.db.scan import DueConnection
from stream_app.publisher import OutgoingRecord
from stream_app.scheduler import RequestPage
from tests.unit.agents.test_local_refreshes import Engine, settle


def page(count: int) -> RequestPage:
    rows = [
        DueConnection(uuid.uuid4(), uuid.uuid4(), "spotify", datetime(2026, 1, 1), datetime(2026, 1, 1), None)
        for _ in range(count)
    ]
    return RequestPage(rows, datetime.now(UTC))


async def test_a_page_goes_out_as_its_records_in_one_call() -> None:
    engine = Engine()
    calls: list[list[OutgoingRecord]] = []

    async def send_many(records: Sequence[OutgoingRecord]) -> None:
        calls.append(list(records))

    requests = page(3)
    emit = publish_or_refresh_here(send_many, LocalRefreshes(engine, max_in_flight=10), "token.expiring", deadline=1)  # type: ignore[arg-type]
    await emit(requests)
    await settle()
    assert calls == [requests.records("token.expiring")]
    assert engine.refreshed == []


@pytest.mark.parametrize("failure", ["hangs", KafkaTimeoutError(), KafkaConnectionError()])
async def test_a_page_the_broker_does_not_take_in_time_is_refreshed_here(failure: Any) -> None:
    engine = Engine()

    async def send_many(records: Sequence[OutgoingRecord]) -> None:
        if failure == "hangs":
            await asyncio.sleep(60)
        raise failure

    requests = page(3)
    emit = publish_or_refresh_here(send_many, LocalRefreshes(engine, max_in_flight=10), "t", deadline=0.2)  # type: ignore[arg-type]
    await asyncio.wait_for(emit(requests), 5)
    await settle()
    assert engine.refreshed == [(row.user_id, "spotify", "scheduled", 0) for row in requests.rows]


async def test_a_refusal_that_would_recur_is_not_hidden() -> None:
    async def send_many(records: Sequence[OutgoingRecord]) -> None:
        raise MessageSizeTooLargeError()

    emit = publish_or_refresh_here(send_many, LocalRefreshes(Engine(), max_in_flight=10), "t", deadline=1)  # type: ignore[arg-type]
    with pytest.raises(MessageSizeTooLargeError):
        await emit(page(1))
