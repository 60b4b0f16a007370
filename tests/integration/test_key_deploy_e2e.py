"""A rolling key deploy on the real broker: a worker still on the old key meets a connection
another engine already wrote under the new key. Its scan asks for the refresh, the worker
defers it (status kept, no `token.refresh_failed`, nothing dead-lettered), counts the key id in
`token_refresh_unknown_key_total`, names it in an ERROR line and in /readyz (503); once the worker is given the
key, the next scan's refresh succeeds."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any

import pytest

from stream_app.crypto import generate_key, key_id
from stream_app.sandbox import SandboxServer
from tests.integration.conftest import ServiceFactory, Stack
from tests.support.connections import seed_connection
from tests.support.kafka import TopicReader

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def _refreshes(sandbox: SandboxServer, grant: dict[str, Any] | None) -> int:
    assert grant is not None
    truth = sandbox.state.grant(grant["grant_id"])
    assert truth is not None
    return truth.refresh_count


def _unknown_key_count(stack: Stack, kid: str) -> float:
    with urllib.request.urlopen(stack.metrics_url, timeout=5) as response:  # noqa: S310 - the local worker
        text = response.read().decode()
    wanted = f'token_refresh_unknown_key_total{{key_id="{kid}"}} '
    return sum(float(line.removeprefix(wanted)) for line in text.splitlines() if line.startswith(wanted))


def _unready_for_key(stack: Stack, kid: str, timeout: float) -> dict[str, Any]:
    """/readyz's body once it answers 503 naming ``kid``."""
    url = stack.metrics_url.rsplit("/", 1)[0] + "/readyz"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - the local worker
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = json.loads(error.read())
            if error.code == 503 and kid in body["checks"].get("encryption_keys", {}).get("detail", ""):
                return dict(body)
        assert time.monotonic() < deadline, f"/readyz never named key id {kid}: {body}"
        time.sleep(1)


async def test_an_old_key_worker_defers_a_new_key_row_until_it_has_the_key(
    stack: Stack, make_service: ServiceFactory, sandbox: SandboxServer, encryption_key: str
) -> None:
    new_key = generate_key()
    kid = key_id(new_key)
    # A worker the deploy has reached already: the new key current, the old one retired.
    new = make_service(encryption_key=new_key, retired_encryption_keys=encryption_key)
    user_id, grant = await seed_connection(
        new.database, new.cipher, sandbox, "spotify", expires_in=timedelta(minutes=2)
    )
    stored = await stack.row(user_id, "spotify")
    assert stored is not None and stored.refresh_token is not None
    assert stored.refresh_token.startswith(f"v2:{kid}:")

    async with (
        stack.reader("token.refresh_failed", "token.refreshed") as outcomes,
        TopicReader(stack.bootstrap, [f"{stack.topics['token.expiring']}.dlq"]) as dead,
    ):
        # The old-key worker's scan finds the connection due and asks for its refresh.
        await asyncio.to_thread(stack.worker.wait_until_logged, f"key id {kid}", 60)
        assert _unknown_key_count(stack, kid) >= 1
        readiness = await asyncio.to_thread(_unready_for_key, stack, kid, 40)
        assert readiness["ready"] is False
        row = await stack.row(user_id, "spotify")
        assert row is not None
        assert (row.status, row.last_sync_status, row.last_sync_error) == ("connected", "pending", None)
        assert row.refresh_token == stored.refresh_token and row.consecutive_failures == 0
        assert _refreshes(sandbox, grant) == 0  # the provider was never called
        await outcomes.drain(3)
        await dead.drain(1)
        assert not [r for r in outcomes.records if str(user_id).encode() in (r[2] or b"")]
        assert not [r for r in dead.records if str(user_id).encode() in (r[1] or b"")]

        # The deploy reaches the worker (the new key readable there): the next scan refreshes it.
        stack.worker.stop()
        stack.worker.env["RETIRED_ENCRYPTION_KEYS"] = new_key
        stack.restart_worker("worker-with-new-key.log").wait_ready()
        refreshed = await outcomes.wait_for(
            lambda topic, e: e.get("user_id") == str(user_id) and topic == stack.topics["token.refreshed"],
            timeout=90,
        )

    assert refreshed["platform"] == "spotify"
    assert not [
        r
        for r in outcomes.records
        if r[0] == stack.topics["token.refresh_failed"] and str(user_id).encode() in (r[2] or b"")
    ]
    after = await stack.row(user_id, "spotify")
    assert after is not None and after.status == "connected" and after.last_sync_status == "success"
    assert _refreshes(sandbox, grant) == 1
