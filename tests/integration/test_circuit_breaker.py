"""A provider failing most calls is left alone for a cool-down: no refresh storm, connections
stay connected, and traffic resumes after one successful trial."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from stream_app import TokenService
from stream_app.db.connections import get_connection
from stream_app.engine.breaker import CircuitState
from stream_app.sandbox import SandboxServer
from tests.integration.conftest import ServiceFactory
from tests.support.connections import seed_connection

pytestmark = pytest.mark.postgres

COOL_DOWN = 2.0


@pytest.fixture
def service(make_service: ServiceFactory) -> TokenService:
    return make_service(refresh_max_attempts=0, circuit_min_calls=3, circuit_cool_down_seconds=COOL_DOWN)


def requests_to(sandbox: SandboxServer, platform: str) -> int:
    return int(sandbox.state.stats()["by_platform"].get(platform, {}).get("total", 0))


async def test_open_circuit_stops_calls_keeps_connections_connected_and_resumes(
    service: TokenService, sandbox: SandboxServer
) -> None:
    users = [
        (await seed_connection(service.database, service.cipher, sandbox, "twitch", expires_in=timedelta(minutes=3)))[0]
        for _ in range(8)
    ]
    sandbox.state.add_fault({"platform": "twitch", "mode": "server_error", "count": 1000})
    before = requests_to(sandbox, "twitch")

    results = [await service.engine.refresh(user, "twitch", trigger="scheduled") for user in users]

    assert [r.outcome for r in results[:3]] == ["failed"] * 3  # three 5xx in a row open it
    assert {r.reason for r in results[3:]} == {"circuit_open"}
    assert requests_to(sandbox, "twitch") - before == 3  # the other five never reached the provider
    assert service.engine.circuit_state("twitch") is CircuitState.OPEN
    async with service.database.sessions() as session:
        rows = [await get_connection(session, user, "twitch") for user in users]
    assert {row.status for row in rows if row is not None} == {"connected"}
    assert all(row is not None and row.refresh_due_at is not None for row in rows)

    sandbox.state.clear_faults()
    await asyncio.sleep(COOL_DOWN)
    trial = await service.engine.refresh(users[3], "twitch", trigger="on_demand")
    assert trial.outcome == "refreshed"
    assert (await service.engine.refresh(users[4], "twitch", trigger="on_demand")).outcome == "refreshed"
