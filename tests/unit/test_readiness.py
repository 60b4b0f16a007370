"""The worker's /ready answers 503, naming the platforms, while a circuit is stuck open; /metrics
is served beside it."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from stream_app import metrics


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a local test server
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture(scope="module")
def base_url() -> str:
    port = free_port()
    metrics.serve("127.0.0.1", port)
    return f"http://127.0.0.1:{port}"


def test_ready_until_a_circuit_is_stuck(base_url: str) -> None:
    metrics.report_readiness([])
    status, body = get(f"{base_url}/ready")
    assert (status, json.loads(body)) == (200, {"ready": True, "stuck_circuits": []})
    metrics.report_readiness(["twitch", "discord"])
    status, body = get(f"{base_url}/ready")
    assert (status, json.loads(body)) == (503, {"ready": False, "stuck_circuits": ["discord", "twitch"]})
    metrics.report_readiness([])
    assert get(f"{base_url}/ready")[0] == 200


def test_metrics_are_served_beside_it(base_url: str) -> None:
    status, body = get(f"{base_url}/metrics")
    assert status == 200 and b"token_refresh_circuit_stuck" in body
