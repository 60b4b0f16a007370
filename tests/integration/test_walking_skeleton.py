"""connection.created → refresh at the provider → token.refreshed / token.needs_reauth,
through a real worker process, real Kafka, real Postgres and the provider sandbox."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.integration.conftest import Stack

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def _for(user_id: object):
    return lambda _topic, event: event.get("user_id") == str(user_id)


@pytest.mark.parametrize("platform", ["spotify", "discord", "youtube"])
async def test_expiring_connection_is_refreshed_and_stored_encrypted(stack: Stack, platform: str) -> None:
    async with stack.reader("token.refreshed", "token.needs_reauth", "token.refresh_failed") as reader:
        user_id, grant = await stack.connect(platform, expires_in=timedelta(minutes=2))
        event = await reader.wait_for(_for(user_id))

    assert event["event_type"] == "token.refreshed", event
    assert event["platform"] == platform
    assert event["attempts"] == 1
    truth = stack.sandbox.state.grant(grant["grant_id"]).snapshot()
    row = await stack.row(user_id, platform)
    assert row is not None and row.status == "connected" and row.last_sync_status == "success"
    assert row.last_sync_error is None
    # The row holds ciphertexts of exactly what the provider now considers live.
    assert row.access_token != truth["live_access_token"]
    assert stack.cipher.decrypt_column(row, "access_token") == truth["live_access_token"]
    assert stack.cipher.decrypt_column(row, "refresh_token") == truth["live_refresh_token"]
    assert truth["refresh_count"] == 1
    assert event["refresh_token_rotated"] == (truth["live_refresh_token"] != grant["live_refresh_token"])


async def test_revoked_grant_leads_to_needs_reauth(stack: Stack) -> None:
    grant = stack.sandbox.create_grant("spotify")
    stack.sandbox.state.revoke(grant["grant_id"])
    async with stack.reader("token.refreshed", "token.needs_reauth", "token.refresh_failed") as reader:
        user_id, _ = await stack.connect("spotify", expires_in=timedelta(minutes=2), grant=grant)
        event = await reader.wait_for(_for(user_id))

    assert event["event_type"] == "token.needs_reauth"
    assert event["reason"] == "invalid_grant"
    assert event["status"] == "needs_reauth"
    row = await stack.row(user_id, "spotify")
    assert row is not None and row.status == "needs_reauth" and row.last_sync_status == "error"


async def test_github_connection_is_never_refreshed(stack: Stack) -> None:
    async with stack.reader(
        "token.expiring", "token.refreshed", "token.needs_reauth", "token.refresh_failed"
    ) as reader:
        github_user, _ = await stack.connect("github", expires_in=timedelta(minutes=1))
        # A refreshable connection published after it shows the worker got past it.
        spotify_user, _ = await stack.connect("spotify", expires_in=timedelta(minutes=2))
        await reader.wait_for(
            lambda topic, e: e.get("user_id") == str(spotify_user) and e["event_type"] == "token.refreshed"
        )
        await reader.drain(5)  # more than two scan intervals

    assert not [r for r in reader.records if str(github_user).encode() in (r[2] or b"")]
    row = await stack.row(github_user, "github")
    assert row is not None and row.status == "connected" and row.last_sync_status == "pending"


async def test_no_plain_token_reaches_a_topic_or_the_worker_log(stack: Stack) -> None:
    """The worker logs at DEBUG here; every token the sandbox ever issued is searched for."""
    everything = (
        "connection.created",
        "token.expiring",
        "token.refreshed",
        "token.needs_reauth",
        "token.refresh_failed",
    )
    async with stack.reader(*everything) as reader:
        user_id, _ = await stack.connect("discord", expires_in=timedelta(minutes=2))
        await reader.wait_for(lambda _t, e: e.get("user_id") == str(user_id) and e["event_type"] == "token.refreshed")
        await reader.drain(1)

    issued = stack.sandbox.state.issued()
    tokens = issued["access_tokens"] + issued["refresh_tokens"]
    assert len(tokens) > 2 and len(reader.records) > 2
    haystacks = [stack.worker.log(), *((value or b"").decode() for _topic, _key, value in reader.records)]
    leaks = [token for token in tokens for text in haystacks if token in text]
    assert leaks == []
