"""/ready answers 503 and names the key ids while a worker meets stored rows under a key it
has not been given (a key deploy that has not reached it yet)."""

from __future__ import annotations

import json

from stream_app import metrics
from tests.unit.test_readiness import base_url, get

__all__ = ["base_url"]  # the fixture, served once for this module too


def test_not_ready_while_rows_under_a_key_this_worker_lacks_are_met(base_url: str) -> None:
    metrics.report_readiness([], ["1c84c72c"])
    status, body = get(f"{base_url}/ready")
    assert (status, json.loads(body)) == (
        503,
        {"ready": False, "stuck_circuits": [], "unknown_key_ids": ["1c84c72c"]},
    )
    metrics.report_readiness([], [])
    status, body = get(f"{base_url}/ready")
    assert (status, json.loads(body)) == (200, {"ready": True, "stuck_circuits": []})
