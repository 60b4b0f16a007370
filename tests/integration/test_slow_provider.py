"""A provider slower than the refresh lease, for a hundred connections at once, with a real
worker reading `token.expiring` in batches.

The sandbox answers every X token request only after 8 s: longer than the lease (6 s) and
than the worker's call deadline (2 s), so every call times out. Then the provider is fast
again. Nothing may be spent twice (the sandbox counts a spent single-use token presented
again, and X revokes the grant for it), no rotated token may be lost, a lease must never be
seen lapsed while its refresh runs, the consumer must keep its partitions and commit past
everything, and every connection ends refreshed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from agents.batch_consumer import refresh_group_id
from stream_app.db import Database
from stream_app.sandbox import SandboxServer
from tests.integration.conftest import ServiceFactory, Stack
from tests.support.connections import seed_connection
from tests.support.kafka import produce, uncommitted
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]
log = logging.getLogger(__name__)

CONNECTIONS = 100
SLOW_SECONDS = 8.0
PLATFORM_SLOTS = 10
SLOW_ENV = {
    "REFRESH_LEASE_SECONDS": "6",
    "HTTP_TIMEOUT_SECONDS": "2",
    "SCAN_INTERVAL_SECONDS": "1",
    "FAILURE_BACKOFF_BASE_SECONDS": "1",
    "FAILURE_BACKOFF_MAX_SECONDS": "3",
    "CIRCUIT_COOL_DOWN_SECONDS": "3",
    # Calls queue for a platform slot much longer than a lease lives.
    "PLATFORM_MAX_CONCURRENCY": str(PLATFORM_SLOTS),
    "LOG_LEVEL": "INFO",
    "HTTP_PORT": "0",
}


async def test_a_provider_slower_than_the_lease_spends_nothing_twice_and_loses_nothing(stack: Stack) -> None:
    stack.worker.stop()
    env = {**stack.worker.env, **SLOW_ENV}
    worker = WorkerProcess(env, stack.worker.log_path.with_name("slow-provider.log")).start()
    state = stack.sandbox.state
    state.add_fault_rule({"platform": "x", "mode": "timeout", "delay": SLOW_SECONDS, "probability": 1.0})
    database = Database(stack.database_url)
    try:
        worker.wait_until_logged("Ready", timeout=90)
        events = [stack.connection_event("x", expires_in=timedelta(minutes=2)) for _ in range(CONNECTIONS)]
        await produce(
            stack.bootstrap,
            stack.topics["connection.created"],
            [(event.key.encode(), event.to_bytes()) for event, _ in events],
        )
        grants = {event.user_id: grant["grant_id"] for event, grant in events if grant is not None}

        # The slow phase, until every connection's refresh has been put off (a failure or the
        # open circuit recorded on its row); no lease of a refresh in flight may lapse meanwhile.
        lapsed_seen = max_held = 0
        put_off: set[Any] = set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(put_off) < CONNECTIONS:
            held, lapsed, later = await _leases(database, list(grants))
            max_held, lapsed_seen = max(max_held, held), max(lapsed_seen, lapsed)
            put_off |= later
            await asyncio.sleep(0.1)
        assert len(put_off) == CONNECTIONS, f"{len(put_off)} of {CONNECTIONS} refreshes put off"

        state.end_fault_rules()  # the provider is fast again
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not all(state.grant(g).refresh_count for g in grants.values()):  # type: ignore[union-attr]
            held, lapsed, _ = await _leases(database, list(grants))
            max_held, lapsed_seen = max(max_held, held), max(lapsed_seen, lapsed)
            await asyncio.sleep(0.25)
        await _wait_until_committed(stack, deadline=time.monotonic() + 15)
        # The sandbox records a request when it answers: wait for the slow ones' answers.
        deadline = time.monotonic() + SLOW_SECONDS + 2
        while time.monotonic() < deadline and any(state.grant(g).in_flight for g in grants.values()):  # type: ignore[union-attr]
            await asyncio.sleep(0.2)
        slow_calls = sum(1 for entry in _x_requests(state.history()) if entry.get("fault") == "timeout")
    finally:
        state.clear_faults()
        await database.dispose()
        worker.stop()
        stack.restart_worker("worker-after-slow-provider.log")

    worker_log = worker.log()
    truths = {user_id: state.grant(grant_id) for user_id, grant_id in grants.items()}
    double_spent = sum(len(t.double_spent_at) for t in truths.values() if t is not None)
    revoked = [t.revoked_reason for t in truths.values() if t is not None and t.revoked]
    unrefreshed = [u for u, t in truths.items() if t is None or t.refresh_count == 0]
    log.info(
        f"slow calls={slow_calls} max leases held={max_held} lapsed leases seen={lapsed_seen} "
        f"double spends={double_spent} revoked={len(revoked)} unrefreshed={len(unrefreshed)} "
        f"x requests={len(_x_requests(state.history()))}"
    )
    assert double_spent == 0
    assert revoked == []
    assert unrefreshed == []
    assert max_held > 0, "no lease was ever seen held"
    assert lapsed_seen == 0, "a refresh in flight let its lease lapse"
    assert "Refresh lease lost" not in worker_log
    # Calls queued for a slot when the circuit opened stay home: the first failures open it
    # (CIRCUIT_MIN_CALLS, 20), then one trial per cool-down; and a trial is not stuck behind them.
    assert slow_calls <= 20 + 2 * PLATFORM_SLOTS, f"{slow_calls} calls to a provider failing every call"
    assert "stays open past its cool-down" not in worker_log
    for user_id, truth in truths.items():
        row = await stack.row(user_id, "x")
        assert truth is not None and row is not None
        assert row.status == "connected", (row.status, row.last_sync_error)
        assert row.refresh_lease_owner is None
        assert stack.cipher.decrypt_column(row, "refresh_token") == truth.live_refresh_token
        assert stack.cipher.decrypt_column(row, "access_token") == truth.live_access_token
    # One assignment when the worker joined: no rebalance while refreshes were slow.
    assert worker_log.count(f"{stack.topics['token.expiring']} partitions assigned") == 1


async def test_refreshes_queued_past_their_lease_are_not_taken_over_or_spent_twice(
    stack: Stack, make_service: ServiceFactory
) -> None:
    """Each call takes 1.5 s and ten go at once: the last of a hundred refreshes claimed together
    waits ~15 s for its call, well past its 6 s lease. Meanwhile another process asks for each of
    them on demand, over and over: it must find every lease held (or the token already fresh),
    never take one over and spend the same single-use token."""
    stack.worker.stop()
    worker = WorkerProcess({**stack.worker.env, **SLOW_ENV}, stack.worker.log_path.with_name("queued.log")).start()
    state = stack.sandbox.state
    rival = make_service(refresh_lease_seconds=6, http_timeout_seconds=2)
    database = Database(stack.database_url)
    outcomes: Counter[str] = Counter()
    try:
        worker.wait_until_logged("Ready", timeout=90)
        state.latency = 1.5
        events = [stack.connection_event("x", expires_in=timedelta(minutes=2)) for _ in range(CONNECTIONS)]
        await produce(
            stack.bootstrap,
            stack.topics["connection.created"],
            [(event.key.encode(), event.to_bytes()) for event, _ in events],
        )
        grants = {event.user_id: grant["grant_id"] for event, grant in events if grant is not None}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (await _leases(database, list(grants)))[0] < CONNECTIONS // 2:
            await asyncio.sleep(0.1)
        lapsed_seen = 0
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not all(state.grant(g).refresh_count for g in grants.values()):  # type: ignore[union-attr]
            results = await asyncio.gather(
                *(rival.engine.refresh(u, "x", trigger="on_demand", wait_for_others=0) for u in grants)
            )
            outcomes.update(f"{r.outcome}/{r.reason}" for r in results)
            lapsed_seen = max(lapsed_seen, (await _leases(database, list(grants)))[1])
            await asyncio.sleep(0.5)
        state.latency = 0.0
        await _wait_until_committed(stack, deadline=time.monotonic() + 15)
    finally:
        state.latency = 0.0
        await database.dispose()
        worker.stop()
        stack.restart_worker("worker-after-queued.log")

    truths = [state.grant(g) for g in grants.values()]
    refresh_counts = Counter(t.refresh_count for t in truths if t is not None)
    double_spent = sum(len(t.double_spent_at) for t in truths if t is not None)
    log.info(f"rival outcomes={dict(outcomes)} refresh counts={dict(refresh_counts)} double spends={double_spent}")
    assert double_spent == 0
    assert refresh_counts == {1: CONNECTIONS}  # each refreshed once, by one process
    assert lapsed_seen == 0
    assert outcomes["skipped/refreshing_elsewhere"] > 0  # the rival did meet the worker's leases
    for user_id, grant_id in grants.items():
        row, truth = await stack.row(user_id, "x"), state.grant(grant_id)
        assert row is not None and truth is not None and row.status == "connected"
        assert stack.cipher.decrypt_column(row, "refresh_token") == truth.live_refresh_token


async def test_a_refresh_whose_lease_was_taken_over_while_it_queued_never_calls(
    make_service: ServiceFactory, sandbox: SandboxServer
) -> None:
    """One call at a time, 1.9 s each: five refreshes claimed together queue for the provider.
    Another process takes over the leases of the four not yet calling (as after a stall of
    the renewals). Each finds out at its next renewal (every 2 s) and must then stop before
    its call: only the second in line may start before that renewal."""
    service = make_service(platform_max_concurrency=1, refresh_lease_seconds=6, http_timeout_seconds=2)
    seeded = [
        await seed_connection(service.database, service.cipher, sandbox, "x", expires_in=timedelta(minutes=2))
        for _ in range(5)
    ]
    grants = {user: grant["grant_id"] for user, grant in seeded}
    sandbox.state.latency = 1.9
    try:
        refreshing = asyncio.gather(*(service.engine.refresh(u, "x", trigger="scheduled") for u in grants))
        while not any(sandbox.state.grant(g).in_flight for g in grants.values()):  # type: ignore[union-attr]
            await asyncio.sleep(0.02)
        waiting = [u for u, g in grants.items() if not sandbox.state.grant(g).in_flight]  # type: ignore[union-attr]
        async with service.database.transaction() as session:
            await session.execute(
                text(
                    "UPDATE platform_connections SET refresh_lease_owner = 'elsewhere:1:taken', "
                    "refresh_lease_expires_at = clock_timestamp() + interval '60 seconds' "
                    "WHERE platform = 'x' AND user_id = ANY(:ids)"
                ),
                {"ids": waiting},
            )
        results = dict(zip(grants, await refreshing, strict=True))
    finally:
        sandbox.state.latency = 0.0
    called = [u for u in waiting if sandbox.state.grant(grants[u]).refresh_count]  # type: ignore[union-attr]
    assert len(waiting) == 4
    assert len(called) <= 1, f"{len(called)} of 4 refreshes called the provider under a lease taken over"
    assert sum(results[u].reason == "lease_lost" for u in waiting) >= 3


def _x_requests(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in history if entry.get("platform") == "x"]


async def _leases(database: Database, user_ids: list[Any]) -> tuple[int, int, set[Any]]:
    """(leases held, leases held but lapsed by the database's clock, the connections whose
    refresh is put off: no lease and a next attempt recorded) among these connections."""
    async with database.sessions() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT user_id, refresh_lease_owner IS NOT NULL, "
                    "refresh_lease_expires_at < clock_timestamp(), refresh_not_before IS NOT NULL "
                    "FROM platform_connections WHERE platform = 'x' AND user_id = ANY(:ids)"
                ),
                {"ids": user_ids},
            )
        ).all()
    held = sum(1 for _, owned, _, _ in rows if owned)
    lapsed = sum(1 for _, owned, expired, _ in rows if owned and expired)
    return held, lapsed, {user for user, owned, _, later in rows if later and not owned}


async def _wait_until_committed(stack: Stack, deadline: float) -> None:
    """Until the worker's `token.expiring` group has committed every record."""
    while (lag := await _uncommitted(stack))[1]:
        if time.monotonic() > deadline:
            raise AssertionError(f"the worker's group left {lag[1]} of {lag[0]} requests uncommitted")
        await asyncio.sleep(0.5)


async def _uncommitted(stack: Stack) -> tuple[int, int]:
    """(records on `token.expiring`, those of them the worker's group has not committed past)."""
    group = refresh_group_id(stack.worker.env["KAFKA_APP_ID"])
    return await uncommitted(stack.bootstrap, group, stack.topics["token.expiring"])
