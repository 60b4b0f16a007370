"""The notifier's probes: /readyz says why it is not ready, and a failing check is a 503 too."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from stream_app.notify.http import create_app
from stream_app.notify.metrics import NotifyMetrics


async def answers(ready_answer: object) -> tuple[int, dict[str, str]]:
    async def ready() -> str | None:
        if isinstance(ready_answer, Exception):
            raise ready_answer
        return ready_answer  # type: ignore[return-value]

    async with TestClient(TestServer(create_app(NotifyMetrics(), ready))) as client:
        response = await client.get("/readyz")
        return response.status, await response.json()


async def test_ready_not_ready_and_a_failing_check() -> None:
    assert await answers(None) == (200, {"status": "ready"})
    assert await answers("the consumer is not running") == (
        503,
        {"status": "not ready", "reason": "the consumer is not running"},
    )
    status, body = await answers(ConnectionError("postgresql://user:secret@db/x refused"))
    assert status == 503 and body["reason"] == "readiness check failed: ConnectionError"  # the text is not shown


async def test_metrics_declare_every_channel_at_zero() -> None:
    metrics = NotifyMetrics()
    metrics.declare(["email", "slack"])

    async def ready() -> None:
        return None

    async with TestClient(TestServer(create_app(metrics, ready))) as client:
        text = await (await client.get("/metrics")).text()
        health = await (await client.get("/healthz")).json()
    assert health == {"status": "ok"}
    for name in ("sent", "failed", "deduplicated", "dead_lettered", "suppressed", "dropped"):
        for channel in ("email", "slack"):
            assert f'token_refresh_notify_{name}_total{{channel="{channel}"}} 0.0' in text
    assert 'token_refresh_notify_queued{channel="email"} 0.0' in text
