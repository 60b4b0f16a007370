"""A platform throttling the whole application for longer than any inline wait, while two
thousand of its `token.expiring` requests arrive, read in batches by a real worker, together
with requests for a healthy platform.

X answers every token request with 429 (application-wide, Retry-After 30 s) for 30 s. The
worker must honour the wait (no X call starts after the first 429 until the throttle ends),
record the held refreshes and acknowledge them (the committed offsets reach the end during
the throttle), refresh the healthy platform's tokens meanwhile with no delay from X, keep its
memory bounded, and refresh every X connection once the throttle is over."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from agents.batch_consumer import refresh_group_id
from tests.integration.conftest import Stack
from tests.support.kafka import produce, uncommitted
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]
log = logging.getLogger(__name__)

THROTTLED = 2000
HEALTHY_PER_WAVE = 50
THROTTLE_SECONDS = 30.0
PLATFORM_SLOTS = 20
THROTTLE_ENV = {
    "SCAN_INTERVAL_SECONDS": "1",
    "HTTP_TIMEOUT_SECONDS": "2",
    "REFRESH_LEASE_SECONDS": "6",
    "RATE_LIMIT_MAX_INLINE_WAIT_SECONDS": "5",
    "PLATFORM_MAX_CONCURRENCY": str(PLATFORM_SLOTS),
    "LOG_LEVEL": "INFO",
    "HTTP_PORT": "0",
}


@pytest.mark.parametrize(
    "retry_after",
    [THROTTLE_SECONDS, THROTTLE_SECONDS / 3, 4.0],
    ids=["one-wait", "three-waits", "waits-each-short-enough-to-sleep"],
)
async def test_a_minutes_long_throttle_is_honoured_held_and_acked_and_stalls_no_other_platform(
    stack: Stack, retry_after: float
) -> None:
    """With Retry-After the whole throttle, a third of it (the provider extends it twice), or
    4 s again and again: each wait short enough to sleep through (RATE_LIMIT_MAX_INLINE_WAIT_SECONDS
    is 5), the throttle not."""
    stack.worker.stop()
    env = {**stack.worker.env, **THROTTLE_ENV}
    worker = WorkerProcess(env, stack.worker.log_path.with_name(f"long-throttle-{retry_after:g}.log")).start()
    state = stack.sandbox.state
    healthy: dict[str, float] = {}  # grant id -> when its connection was published
    try:
        worker.wait_until_logged("Ready", timeout=90)
        rss_at_start = _rss_mb(worker.pid)
        requested_before, _ = await _uncommitted(stack)  # the module's earlier tests' requests
        throttle_started = time.time()
        state.add_fault_rule(
            {
                "platform": "x",
                "mode": "rate_limit",
                "retry_after": retry_after,
                "platform_wide": True,
                "probability": 1.0,
                "duration": THROTTLE_SECONDS,
            }
        )
        throttle_ends = throttle_started + THROTTLE_SECONDS
        throttled = await _publish(stack, healthy, x=THROTTLED, spotify=HEALTHY_PER_WAVE)

        rss_peak, acked_all_at, second_wave = rss_at_start, None, False
        while time.time() < throttle_ends - 1:
            rss_peak = max(rss_peak, _rss_mb(worker.pid))
            if not second_wave and time.time() > throttle_started + THROTTLE_SECONDS / 3:
                await _publish(stack, healthy, x=0, spotify=HEALTHY_PER_WAVE)  # while X is held
                second_wave = True
            if acked_all_at is None:
                requested, uncommitted = await _uncommitted(stack)
                if requested - requested_before >= THROTTLED + 2 * HEALTHY_PER_WAVE and not uncommitted:
                    acked_all_at = time.time() - throttle_started
            await asyncio.sleep(0.5)

        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and not all(state.grant(g).refresh_count for g in throttled):  # type: ignore[union-attr]
            rss_peak = max(rss_peak, _rss_mb(worker.pid))
            await asyncio.sleep(0.5)
    finally:
        state.clear_faults()
        worker.stop()
        stack.restart_worker("worker-after-long-throttle.log")

    history = [entry for entry in state.history() if entry.get("platform") == "x" and entry["at"] >= throttle_started]
    during = [entry for entry in history if entry["at"] < throttle_ends]
    first_429 = min((entry["at"] for entry in during if entry["status"] == 429), default=throttle_ends)
    # A 429 is answered at once: a request's record time is when it was sent, give or take.
    in_first_wait = [entry for entry in during if first_429 + 0.5 < entry["at"] < first_429 + retry_after - 0.5]
    per_grant = Counter(entry["grant_id"] for entry in during)
    latencies = sorted(state.grant(g).refreshed_at[0] - sent for g, sent in healthy.items())  # type: ignore[union-attr]
    truths = [state.grant(g) for g in throttled]
    refreshed = sum(1 for t in truths if t is not None and t.refresh_count == 1)
    double_spent = sum(len(t.double_spent_at) for t in truths if t is not None)
    log.info(
        f"X calls during the throttle={len(during)} (in the first wait: {len(in_first_wait)}, "
        f"most per grant: {max(per_grant.values(), default=0)}); "
        f"healthy latency p50={latencies[len(latencies) // 2]:.2f}s "
        f"max={latencies[-1]:.2f}s; all acked {acked_all_at}s into the throttle; "
        f"RSS {rss_at_start:.0f} -> peak {rss_peak:.0f} MB; X refreshed once {refreshed}/{THROTTLED}; "
        f"double spends {double_spent}"
    )
    # The calls in the platform's slots when the first 429 came, then one probe per wait that ends.
    probes = round(THROTTLE_SECONDS / retry_after) - 1
    assert len(during) <= PLATFORM_SLOTS + probes + 2, "the throttled platform was called again and again"
    assert in_first_wait == [], "calls went out while the platform said to wait"
    assert latencies[-1] < 10, "the healthy platform's refreshes waited behind the throttled one"
    assert acked_all_at is not None, "held refreshes were not acknowledged while the throttle lasted"
    assert rss_peak - rss_at_start < 200
    assert refreshed == THROTTLED and double_spent == 0
    assert worker.log().count(f"{stack.topics['token.expiring']} partitions assigned") == 1


async def _publish(stack: Stack, healthy: dict[str, float], *, x: int, spotify: int) -> list[str]:
    """`connection.created` for ``x`` X connections and ``spotify`` Spotify ones spread among
    them, all due for a refresh; returns the X grants and notes when the Spotify ones went."""
    platforms = ["x"] * x
    for index in range(spotify):
        platforms.insert(index * (x // spotify + 1) if x else index, "spotify")
    events = [stack.connection_event(p, expires_in=timedelta(minutes=2)) for p in platforms]
    await produce(
        stack.bootstrap,
        stack.topics["connection.created"],
        [(event.key.encode(), event.to_bytes()) for event, _ in events],
    )
    sent = time.time()
    grants = [(event.platform, grant["grant_id"]) for event, grant in events if grant is not None]
    healthy.update((grant_id, sent) for platform, grant_id in grants if platform == "spotify")
    return [grant_id for platform, grant_id in grants if platform == "x"]


async def _uncommitted(stack: Stack) -> tuple[int, int]:
    """(records on `token.expiring`, those of them the worker's group has not committed past)."""
    group = refresh_group_id(stack.worker.env["KAFKA_APP_ID"])
    return await uncommitted(stack.bootstrap, group, stack.topics["token.expiring"])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
