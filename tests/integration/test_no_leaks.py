"""No plain-text token or client secret anywhere: every topic (dead letters included), every
log line of a worker at DEBUG, every metric. The full flow runs first: connect, refresh,
rotation, re-auth, refused clients, 5xx, providers that echo the token back, hostile input."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
from datetime import timedelta
from typing import Any

import pytest

from stream_app.catalog import CREDENTIAL_KEYS
from tests.integration.conftest import Stack
from tests.support.kafka import TopicReader, produce

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

ALL_TOPICS = ("connection.created", "token.expiring", "token.refreshed", "token.needs_reauth", "token.refresh_failed")


async def test_no_plain_token_or_secret_reaches_a_topic_a_log_line_or_a_metric(stack: Stack) -> None:
    state = stack.sandbox.state
    due = timedelta(minutes=2)
    outcomes_expected = []
    for platform in ("spotify", "discord", "x", "slack", "github_app", "microsoft"):
        outcomes_expected.append((await stack.connect(platform, expires_in=due))[0])
    revoked = stack.sandbox.create_grant("spotify")
    state.revoke(revoked["grant_id"])
    outcomes_expected.append((await stack.connect("spotify", expires_in=due, grant=revoked))[0])
    for platform, mode in (("linkedin", "echo_token"), ("twitch", "invalid_client"), ("reddit", "echo_token")):
        state.add_fault({"platform": platform, "mode": mode})
        outcomes_expected.append((await stack.connect(platform, expires_in=due))[0])
    state.add_fault({"platform": "google", "mode": "server_error", "count": 3})
    outcomes_expected.append((await stack.connect("youtube", expires_in=due))[0])
    # A hostile producer: plain-text tokens where ciphertexts belong.
    leaked = stack.sandbox.create_grant("discord")
    hostile, _ = stack.connection_event("discord", expires_in=due, grant=leaked)
    raw = json.loads(hostile.to_bytes()) | {
        "access_token": leaked["live_access_token"],
        "refresh_token": leaked["live_refresh_token"],
    }
    await produce(
        stack.bootstrap, stack.topics["connection.created"], [(hostile.key.encode(), json.dumps(raw).encode())]
    )

    topics = [stack.topics[name] for name in ALL_TOPICS]
    topics += [f"{stack.topics[name]}.dlq" for name in ("connection.created", "token.expiring")]
    async with TopicReader(stack.bootstrap, topics) as reader:
        for user_id in outcomes_expected:
            await reader.wait_for(
                lambda t, e, u=str(user_id): e.get("user_id") == u and not t.startswith(stack.topics["token.expiring"]),
                timeout=90,
            )
        await reader.wait_for(lambda t, e: t.endswith(".dlq") and e.get("key") == hostile.key, timeout=60)
        await reader.drain(2)
    metrics = await asyncio.to_thread(_scrape, stack.metrics_url)

    needles = _needles(stack)
    haystacks = {"worker log": stack.worker.log(), "metrics": metrics}
    for topic, key, value in reader.records:
        if topic == stack.topics["connection.created"] and key == hostile.key.encode():
            continue  # the hostile producer's own record: what it sent, not what the service wrote
        haystacks[f"{topic} record"] = haystacks.get(f"{topic} record", "") + _readable(value)
    assert len(needles) > 20 and len(reader.records) > 20 and "token_refresh_success_total" in metrics
    leaks = sorted({where for where, text in haystacks.items() for needle in needles if needle in text})
    assert leaks == []
    # Events carry user ids (notifiers need them); logs and metrics only their keyed hash.
    users = [str(user_id) for user_id in outcomes_expected]
    assert not [user for user in users if user in haystacks["worker log"] or user in metrics]


def _needles(stack: Stack) -> list[str]:
    issued = stack.sandbox.state.issued()
    secrets = [stack.sandbox.credentials(key)[1] for key in CREDENTIAL_KEYS]
    return [*issued["access_tokens"], *issued["refresh_tokens"], *secrets, stack.worker.env["ENCRYPTION_KEY"]]


def _readable(value: bytes | None) -> str:
    """The record as text, with a dead letter's kept bytes decoded too."""
    text = (value or b"").decode("utf-8", errors="replace")
    try:
        record: Any = json.loads(text)
    except ValueError:
        return text
    if isinstance(record, dict) and isinstance(record.get("value_base64"), str):
        text += base64.b64decode(record["value_base64"]).decode("utf-8", errors="replace")
    return text


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - a local test URL
        return str(response.read().decode())
