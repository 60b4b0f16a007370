"""A half-open circuit's trial is always settled: neither a pause of the whole platform nor an
exception nobody expected can leave it "in flight" forever, deferring every later refresh."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from stream_app import TokenService
from stream_app.engine import RefreshEngine
from stream_app.engine.breaker import CircuitState
from stream_app.providers import ProviderClient
from stream_app.sandbox import SandboxServer
from tests.integration.conftest import ServiceFactory
from tests.support.connections import engine_for, seed_connection

pytestmark = pytest.mark.postgres

COOL_DOWN = 1.0


class Providers(ProviderClient):
    """The real client; ``explode`` makes the next call raise what no dialect anticipated."""

    explode = 0

    async def refresh(self, spec: Any, refresh_token: str) -> Any:
        if Providers.explode:
            Providers.explode -= 1
            raise RuntimeError("an answer nobody anticipated")
        return await super().refresh(spec, refresh_token)


def engine_of(service: TokenService) -> RefreshEngine:
    return engine_for(service, providers=Providers)


async def tripped(service: TokenService, sandbox: SandboxServer, engine: RefreshEngine) -> list[Any]:
    users = [
        (await seed_connection(service.database, service.cipher, sandbox, "twitch", expires_in=timedelta(minutes=3)))[0]
        for _ in range(5)
    ]
    sandbox.state.add_fault({"platform": "twitch", "mode": "server_error", "count": 3})
    for user in users[:3]:
        assert (await engine.refresh(user, "twitch", trigger="on_demand")).outcome == "failed"
    assert engine.circuit_state("twitch") is CircuitState.OPEN
    await asyncio.sleep(COOL_DOWN)
    return users[3:]


@pytest.fixture
def service(make_service: ServiceFactory) -> TokenService:
    return make_service(refresh_max_attempts=0, circuit_min_calls=3, circuit_cool_down_seconds=COOL_DOWN)


async def test_an_unexpected_exception_in_the_trial_reopens_the_circuit_instead_of_wedging_it(
    service: TokenService, sandbox: SandboxServer
) -> None:
    engine = engine_of(service)
    first, second = await tripped(service, sandbox, engine)
    Providers.explode = 1
    with pytest.raises(RuntimeError):
        await engine.refresh(first, "twitch", trigger="on_demand")  # the trial
    assert engine.circuit_state("twitch") is CircuitState.OPEN  # settled as a failure
    await asyncio.sleep(COOL_DOWN)
    result = await engine.refresh(second, "twitch", trigger="on_demand")  # a new trial goes out
    assert result.outcome == "refreshed"
    assert engine.circuit_state("twitch") is CircuitState.CLOSED


async def test_a_platform_pause_during_the_half_open_state_does_not_strand_the_trial(
    service: TokenService, sandbox: SandboxServer
) -> None:
    engine = engine_of(service)
    first, second = await tripped(service, sandbox, engine)
    engine._gates.pause("twitch", 0.5)  # Twitch said: the whole application waits (briefly)
    results = await asyncio.gather(
        engine.refresh(first, "twitch", trigger="on_demand"), engine.refresh(second, "twitch", trigger="on_demand")
    )
    assert [r.outcome for r in results] == ["refreshed", "refreshed"]
    assert engine.circuit_state("twitch") is CircuitState.CLOSED
    assert engine.stuck_circuits() == []
