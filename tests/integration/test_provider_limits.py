"""Provider-facing limits. The real waits a 429 or a throttling 403 asks for, in every provider's style, measured with
a recording clock instead of a minute of wall time; none of them counts as an attempt."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from stream_app import TokenService
from stream_app.clock import utc_now
from stream_app.db import OutboxRow
from stream_app.db.connections import get_connection
from stream_app.providers import ProviderClient
from stream_app.sandbox import SandboxServer
from tests.integration.conftest import ServiceFactory
from tests.support.connections import engine_for, seed_connection

pytestmark = pytest.mark.postgres


class RecordingSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.mark.parametrize(
    ("platform", "fault", "low", "high"),
    [
        ("spotify", {"mode": "rate_limit", "retry_after": 60, "rate_limit_style": "retry_after_seconds"}, 60, 60),
        ("spotify", {"mode": "rate_limit", "retry_after": 60, "rate_limit_style": "retry_after_date"}, 59, 61),
        ("discord", {"mode": "rate_limit", "retry_after": 64.57, "rate_limit_style": "discord_body"}, 64.57, 64.57),
        ("x", {"mode": "rate_limit", "retry_after": 60, "rate_limit_style": "x_reset"}, 59, 61),
        ("reddit", {"mode": "rate_limit", "retry_after": 5, "rate_limit_style": "none"}, 60, 60),
        ("youtube", {"mode": "forbidden_html"}, 60, 60),
    ],
    ids=["retry-after-seconds", "retry-after-date", "discord-body", "x-reset", "unsaid-429", "google-403-html"],
)
async def test_the_wait_asked_for_is_the_wait_taken_and_is_not_an_attempt(
    make_service: ServiceFactory,
    sandbox: SandboxServer,
    platform: str,
    fault: dict[str, object],
    low: float,
    high: float,
) -> None:
    """Here waits up to 100 s are taken in memory (RATE_LIMIT_MAX_INLINE_WAIT_SECONDS)."""
    service = make_service(rate_limit_max_inline_wait_seconds=100)
    sleep = RecordingSleep()
    engine = engine_for(service, sleep=sleep)
    user_id, _ = await seed_connection(
        service.database, service.cipher, sandbox, platform, expires_in=timedelta(minutes=2)
    )
    sandbox.state.add_fault({"platform": platform, **fault})

    result = await engine.refresh(user_id, platform, trigger="scheduled")

    assert result.outcome == "refreshed"
    assert low <= sum(sleep.waits) <= high
    async with service.database.sessions() as session:
        key = f"{user_id}:{platform}".encode()
        payloads = (await session.scalars(select(OutboxRow.payload).where(OutboxRow.key == key))).all()
    assert [json.loads(p)["attempts"] for p in payloads] == [1]


@pytest.mark.parametrize(
    ("platform", "fault", "low", "high"),
    [
        ("spotify", {"mode": "rate_limit", "retry_after": 300, "rate_limit_style": "retry_after_seconds"}, 300, 300),
        ("x", {"mode": "rate_limit", "retry_after": 300, "rate_limit_style": "x_reset"}, 299, 301),
        ("youtube", {"mode": "forbidden_html"}, 60, 60),
    ],
    ids=["retry-after-seconds", "x-reset", "google-403-html"],
)
async def test_a_long_wait_is_recorded_on_the_row_not_slept(
    service: TokenService, sandbox: SandboxServer, platform: str, fault: dict[str, object], low: float, high: float
) -> None:
    """A wait longer than a few seconds holds no lease, no slot and no partition: it becomes the
    row's hold, the scan brings the connection back when it ends, and duplicates skip it."""
    sleep = RecordingSleep()
    engine = engine_for(service, sleep=sleep)
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, platform, expires_in=timedelta(minutes=2)
    )
    sandbox.state.add_fault({"platform": platform, **fault})
    asked_at = utc_now()

    result = await engine.refresh(user_id, platform, trigger="scheduled")

    assert (result.outcome, result.reason) == ("deferred", "rate_limited")
    assert sleep.waits == []
    async with service.database.sessions() as session:
        row = await get_connection(session, user_id, platform)
        events = await session.scalars(select(OutboxRow.id).where(OutboxRow.key == f"{user_id}:{platform}".encode()))
        assert events.all() == []  # still connected: nothing to announce
    assert row is not None and row.refresh_not_before is not None and row.refresh_lease_owner is None
    assert row.status == "connected" and row.refresh_due_at == row.refresh_not_before
    hold = (row.refresh_not_before - asked_at).total_seconds()
    assert low - 1 <= hold <= high + 1
    # A duplicate request meanwhile does not call the provider again.
    again = await engine.refresh(user_id, platform, trigger="scheduled")
    assert (again.outcome, again.reason) == ("skipped", "backing_off")
    assert sandbox.state.grant(grant["grant_id"]).refresh_count == 0
    assert len([r for r in sandbox.state.history() if r.get("grant_id") == grant["grant_id"]]) == 1


class CountingProviders(ProviderClient):
    """The real client, counting its calls in flight."""

    in_flight = 0
    peak = 0

    async def refresh(self, spec: Any, refresh_token: str) -> Any:
        CountingProviders.in_flight += 1
        CountingProviders.peak = max(CountingProviders.peak, CountingProviders.in_flight)
        try:
            return await super().refresh(spec, refresh_token)
        finally:
            CountingProviders.in_flight -= 1


async def test_calls_in_flight_per_platform_are_capped(make_service: ServiceFactory, sandbox: SandboxServer) -> None:
    service = make_service(platform_max_concurrency=3)
    engine = engine_for(service, providers=CountingProviders)
    due = timedelta(minutes=2)
    users = [
        (await seed_connection(service.database, service.cipher, sandbox, "gmail", expires_in=due))[0]
        for _ in range(12)
    ]
    sandbox.state.latency = 0.3
    results = await asyncio.gather(*(engine.refresh(user, "gmail", trigger="scheduled") for user in users))
    assert {result.outcome for result in results} == {"refreshed"}
    assert CountingProviders.peak == 3


@pytest.mark.parametrize("platform_wide", [True, False], ids=["global-limit", "per-user-limit"])
async def test_a_global_limit_pauses_the_platform_and_a_per_user_one_does_not(
    service: TokenService, sandbox: SandboxServer, platform_wide: bool
) -> None:
    due = timedelta(minutes=2)
    limited, first = await seed_connection(service.database, service.cipher, sandbox, "discord", expires_in=due)
    other, second = await seed_connection(service.database, service.cipher, sandbox, "discord", expires_in=due)
    sandbox.state.add_fault(
        {"platform": "discord", "mode": "rate_limit", "retry_after": 1.5, "platform_wide": platform_wide}
    )
    waiting = asyncio.create_task(service.engine.refresh(limited, "discord", trigger="scheduled"))
    while not [r for r in sandbox.state.history() if r.get("grant_id") == first["grant_id"]]:
        await asyncio.sleep(0.01)
    limited_at = asyncio.get_running_loop().time()
    assert (await service.engine.refresh(other, "discord", trigger="scheduled")).outcome == "refreshed"
    took = asyncio.get_running_loop().time() - limited_at
    assert (await waiting).outcome == "refreshed"
    if platform_wide:
        assert took >= 1.3  # Discord said "global": nobody calls it until the wait is over
    else:
        assert took < 1.0  # one user's limit holds back nobody else
    assert sandbox.state.grant(second["grant_id"]).refresh_count == 1
