"""A real worker's HTTP API: ready once its consumer groups have joined, the figures an operator
alerts on in /metrics; its port freed when it stops."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from agents.batch_consumer import ingest_group_id, refresh_group_id
from tests.integration.conftest import Stack

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def _base(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.worker.env['HTTP_PORT']}"


def _until(check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.25)


def test_a_running_worker_is_ready_and_reports_its_groups_lag_and_scan(stack: Stack) -> None:
    app_id = stack.worker.env["KAFKA_APP_ID"]
    ready = _until(lambda: (answer := httpx.get(f"{_base(stack)}/readyz")).status_code == 200 and answer)
    checks = ready.json()["checks"]
    assert set(checks) == {"database", "migrations", "consumer_groups", "circuits", "encryption_keys"}
    assert refresh_group_id(app_id) in checks["consumer_groups"]["detail"]
    assert ingest_group_id(app_id) in checks["consumer_groups"]["detail"]
    assert httpx.get(f"{_base(stack)}/healthz").json() == {"alive": True}

    def scanned() -> str | None:
        body = httpx.get(f"{_base(stack)}/metrics").text
        found = re.search(r"^token_refresh_last_scan_success_timestamp_seconds ([0-9.e+]+)$", body, re.M)
        return body if found and float(found.group(1)) > time.time() - 60 else None

    body = _until(scanned)  # SCAN_INTERVAL_SECONDS is 2 in the suite's stack
    for group in (refresh_group_id(app_id), ingest_group_id(app_id)):
        assert f'token_refresh_consumer_group_joined{{group="{group}"}} 1.0' in body
    expiring = stack.topics["token.expiring"]
    assert re.search(rf'^token_refresh_consumer_lag{{partition="\d+",topic="{re.escape(expiring)}"}} ', body, re.M)
    assert "token_refresh_outbox_unpublished " in body


def test_a_stopped_worker_serves_nothing_and_its_successor_binds_the_same_port(stack: Stack) -> None:
    base = _base(stack)
    _until(lambda: httpx.get(f"{base}/readyz").status_code == 200)
    stack.worker.stop()
    # Gone: the HTTP API went with it (a stopped worker is not reported ready by anything).
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/readyz", timeout=2)
    stack.restart_worker("worker-after-drain.log").wait_ready()
    _until(lambda: httpx.get(f"{base}/readyz").status_code == 200)
