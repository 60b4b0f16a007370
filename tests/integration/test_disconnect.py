"""`connection.disconnected` through a real worker, Kafka, Postgres and the provider sandbox:
status `disconnected`, RFC 7009 revocation where the platform has an endpoint, `token.revoked`
out, no refresh afterwards, ordering with `connection.created` by occurred_at, dead letters."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from schemas.events import ConnectionCreated, ConnectionDisconnected, TokenExpiring
from stream_app import TokenService
from stream_app.db import ConnectionRow
from stream_app.db.connections import get_connection
from stream_app.disconnect import Disconnector, publish_disconnect
from stream_app.privacy import UserIdHasher
from stream_app.revocation import RevocationClient
from stream_app.sandbox import SandboxServer
from stream_app.settings import Settings, load_settings
from tests.integration.conftest import ServiceFactory, Stack
from tests.support.connections import seed_connection
from tests.support.dead_letters import readable_markers
from tests.support.kafka import TopicReader, produce

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


STACK_ENV = {"HTTP_TIMEOUT_SECONDS": "5"}


@pytest.fixture(scope="module")
def stack(own_stack: Stack) -> Stack:
    """A worker reading topics of this module's own, on a database of its own."""
    return own_stack


@pytest.fixture
def settings(stack: Stack, encryption_key: str) -> Settings:
    """What the `disconnect` command reads: the broker and the topic names of the module's worker."""
    return load_settings(
        encryption_key=encryption_key,
        kafka_bootstrap_servers=stack.bootstrap,
        topic_connection_disconnected=stack.topics["connection.disconnected"],
    )


@pytest.fixture(autouse=True)
def _no_faults_left(sandbox: SandboxServer) -> Iterator[None]:
    yield
    sandbox.state.clear_faults()


def _about(user_id: uuid.UUID, event_type: str = "token.revoked") -> Any:
    return lambda _topic, event: event.get("user_id") == str(user_id) and event.get("event_type") == event_type


async def _connected(stack: Stack, platform: str, **created: Any) -> tuple[ConnectionCreated, dict[str, Any]]:
    """A fresh connection (an hour to expiry: nothing refreshes it by itself), stored by the worker."""
    event, grant = stack.connection_event(platform, expires_in=timedelta(hours=1))
    if created:
        event = event.model_copy(update=created)
    await produce(stack.bootstrap, stack.topics["connection.created"], [(event.key.encode(), event.to_bytes())])
    await stack.stored_row(event.user_id, platform)
    assert grant is not None
    return event, grant


async def _disconnected(stack: Stack, settings: Settings, user_id: uuid.UUID, platform: str) -> dict[str, Any]:
    async with stack.reader("token.revoked") as reader:
        published = await publish_disconnect(settings, user_id, platform, reason="user_request")
        return await reader.wait_for(
            lambda _topic, event: event.get("disconnect_event_id") == str(published.event_id), timeout=30
        )


def _revocations_of(sandbox: SandboxServer, grant_id: str) -> list[dict[str, Any]]:
    return [entry for entry in sandbox.state.revocations() if entry.get("grant_id") == grant_id]


@pytest.mark.parametrize("platform", ["youtube", "discord", "x"])
async def test_disconnect_revokes_the_grant_wipes_the_tokens_and_stops_refreshes(
    stack: Stack, settings: Settings, encryption_key: str, platform: str
) -> None:
    created, grant = await _connected(stack, platform)
    user_id = created.user_id

    event = await _disconnected(stack, settings, user_id, platform)

    assert event["status"] == "disconnected" and event["reason"] == "user_request"
    assert event["revocation"] == "revoked" and event["revoked_token_type"] == "refresh_token"
    assert event["tokens_wiped"] is True and event["error"] is None
    truth = stack.sandbox.state.grant(grant["grant_id"])
    assert truth is not None and truth.revoked and truth.revoked_reason == "revoked_by_client"
    assert [entry["outcome"] for entry in _revocations_of(stack.sandbox, grant["grant_id"])] == ["revoked"]
    row = await stack.row(user_id, platform)
    assert row is not None and row.status == "disconnected"
    assert row.access_token is None and row.refresh_token is None
    assert row.token_expires_at is None and row.refresh_due_at is None and row.refresh_lease_owner is None

    # A refresh request for it, even a manual one (which refreshes whatever the expiry), is skipped.
    request = TokenExpiring(user_id=user_id, platform=platform, token_expires_at=None, reason="manual")
    await produce(stack.bootstrap, stack.topics["token.expiring"], [(request.key.encode(), request.to_bytes())])
    tag = f"[{platform}][{UserIdHasher(load_settings(encryption_key=encryption_key).log_hash_secret())(user_id)}]"
    await asyncio.to_thread(stack.worker.wait_until_logged, f"{tag} No refresh: status_disconnected", 30)
    assert stack.sandbox.state.grant(grant["grant_id"]).refresh_count == 0  # type: ignore[union-attr]
    assert (await stack.row(user_id, platform)).status == "disconnected"  # type: ignore[union-attr]


async def test_spotify_has_no_revocation_endpoint_so_its_tokens_are_only_wiped(
    stack: Stack, settings: Settings
) -> None:
    created, grant = await _connected(stack, "spotify")

    event = await _disconnected(stack, settings, created.user_id, "spotify")

    assert event["revocation"] == "unsupported" and event["revoked_token_type"] is None
    assert event["tokens_wiped"] is True
    metrics = httpx.get(stack.metrics_url).text
    assert 'token_refresh_disconnects_total{platform="spotify",revocation="unsupported"}' in metrics
    assert not _revocations_of(stack.sandbox, grant["grant_id"])
    assert not [entry for entry in stack.sandbox.state.revocations() if entry["platform"] == "spotify"]
    assert not stack.sandbox.state.grant(grant["grant_id"]).revoked  # type: ignore[union-attr]
    row = await stack.row(created.user_id, "spotify")
    assert row is not None and row.status == "disconnected" and row.refresh_token is None


async def test_an_older_connection_event_does_not_reconnect_it_a_newer_one_does(
    stack: Stack, settings: Settings
) -> None:
    created, _ = await _connected(stack, "discord", occurred_at=datetime.now(UTC) - timedelta(minutes=10))
    user_id = created.user_id
    await _disconnected(stack, settings, user_id, "discord")
    disconnected = await stack.row(user_id, "discord")
    assert disconnected is not None and disconnected.connected_at is not None

    # Read after the disconnect, but it happened before it (a lagging producer, another partition).
    older, _ = stack.connection_event("discord", expires_in=timedelta(hours=1))
    # (The sandbox's tokens travel in the seed format, bound to no user: the event can change hands.)
    older = older.model_copy(update={"user_id": user_id, "occurred_at": datetime.now(UTC) - timedelta(minutes=5)})
    await produce(stack.bootstrap, stack.topics["connection.created"], [(older.key.encode(), older.to_bytes())])
    await asyncio.to_thread(stack.worker.wait_until_logged, f"Connection event {older.event_id}: stale", 30)
    row = await stack.row(user_id, "discord")
    assert row is not None and row.status == "disconnected" and row.refresh_token is None

    newer, grant = stack.connection_event("discord", expires_in=timedelta(hours=1))
    newer = newer.model_copy(update={"user_id": user_id})
    await produce(stack.bootstrap, stack.topics["connection.created"], [(newer.key.encode(), newer.to_bytes())])
    await asyncio.to_thread(stack.worker.wait_until_logged, f"Connection event {newer.event_id}: stored", 30)
    row = await stack.row(user_id, "discord")
    assert row is not None and row.status == "connected"
    assert grant is not None and stack.cipher.decrypt_column(row, "refresh_token") == grant["live_refresh_token"]


async def test_an_older_disconnect_is_ignored(stack: Stack, settings: Settings) -> None:
    created, grant = await _connected(stack, "youtube")
    stale = ConnectionDisconnected(
        user_id=created.user_id, platform="youtube", occurred_at=created.occurred_at - timedelta(minutes=1)
    )
    await produce(stack.bootstrap, stack.topics["connection.disconnected"], [(stale.key.encode(), stale.to_bytes())])
    await asyncio.to_thread(stack.worker.wait_until_logged, f"Disconnect {stale.event_id} is older", 30)

    row = await stack.row(created.user_id, "youtube")
    assert row is not None and row.status == "connected" and row.refresh_token is not None
    assert not _revocations_of(stack.sandbox, grant["grant_id"])


async def test_a_disconnect_read_before_its_connection_keeps_that_connection_out(
    stack: Stack, settings: Settings
) -> None:
    created, _ = stack.connection_event("discord", expires_in=timedelta(hours=1))
    async with stack.reader("token.revoked") as reader:
        await publish_disconnect(settings, created.user_id, "discord")
        event = await reader.wait_for(_about(created.user_id), timeout=30)
    assert event["revocation"] == "no_token" and event["reason"] == "operator"

    await produce(stack.bootstrap, stack.topics["connection.created"], [(created.key.encode(), created.to_bytes())])
    await asyncio.to_thread(stack.worker.wait_until_logged, f"Connection event {created.event_id}: stale", 30)
    row = await stack.row(created.user_id, "discord")
    assert row is not None and row.status == "disconnected" and row.access_token is None


async def test_a_failed_revocation_still_disconnects_says_why_and_keeps_the_tokens_sealed_for_another_try(
    stack: Stack, settings: Settings
) -> None:
    refused, refused_grant = await _connected(stack, "x")
    echoed, echoed_grant = await _connected(stack, "discord")
    stack.sandbox.state.add_fault({"platform": "x", "mode": "invalid_client", "endpoint": "revoke"})
    stack.sandbox.state.add_fault({"platform": "discord", "mode": "echo_token", "endpoint": "revoke"})

    refused_event = await _disconnected(stack, settings, refused.user_id, "x")
    echoed_event = await _disconnected(stack, settings, echoed.user_id, "discord")

    assert refused_event["revocation"] == "failed" and refused_event["error_class"] == "invalid_client"
    assert refused_event["error"].startswith("unauthorized_client: ") and "(HTTP 401)" in refused_event["error"]
    assert echoed_event["revocation"] == "failed" and echoed_event["error_class"] == "unknown_error"
    secrets = [
        echoed_grant["live_refresh_token"],
        echoed_grant["live_access_token"],
        *stack.sandbox.credentials("discord"),
    ]
    assert not readable_markers(secrets, *(str(value).encode() for value in echoed_event.values()))
    for event, grant, platform in ((refused_event, refused_grant, "x"), (echoed_event, echoed_grant, "discord")):
        assert event["tokens_wiped"] is False and event["status"] == "disconnected"
        assert not stack.sandbox.state.grant(grant["grant_id"]).revoked  # type: ignore[union-attr]
        row = await stack.row(uuid.UUID(event["user_id"]), platform)
        assert row is not None and row.status == "disconnected"
        assert stack.cipher.decrypt_column(row, "refresh_token") == grant["live_refresh_token"]
    assert not readable_markers(secrets, stack.worker.log().encode())

    # Disconnecting again, the provider answering now, revokes the kept tokens and wipes them.
    again = await _disconnected(stack, settings, echoed.user_id, "discord")
    assert again["revocation"] == "revoked" and again["tokens_wiped"] is True
    assert stack.sandbox.state.grant(echoed_grant["grant_id"]).revoked  # type: ignore[union-attr]


async def test_malformed_and_future_dated_disconnects_are_dead_lettered_with_a_reason(
    stack: Stack, settings: Settings
) -> None:
    topic = stack.topics["connection.disconnected"]
    user_id = uuid.uuid4()
    future = ConnectionDisconnected(
        user_id=user_id, platform="discord", occurred_at=datetime.now(UTC) + timedelta(hours=1)
    )
    malformed = b'{"event_type": "connection.disconnected", "user_id": "not-a-uuid", "platform": "discord"}'
    async with TopicReader(stack.bootstrap, [f"{topic}.dlq"]) as dead:
        await produce(
            stack.bootstrap,
            topic,
            [(f"{user_id}:discord".encode(), malformed), (future.key.encode(), future.to_bytes())],
        )
        bad_id = await dead.wait_for(lambda _t, letter: "user_id" in letter["reason"], timeout=30)
        too_late = await dead.wait_for(lambda _t, letter: "occurred_at" in letter["reason"], timeout=30)

    assert bad_id["topic"] == topic and too_late["topic"] == topic
    assert "EVENT_MAX_CLOCK_SKEW_SECONDS" in too_late["reason"]
    assert await stack.row(user_id, "discord") is None


async def test_the_disconnect_command_publishes_the_event_the_worker_applies(stack: Stack, encryption_key: str) -> None:
    created, grant = await _connected(stack, "gmail")
    env = {
        **os.environ,
        "ENCRYPTION_KEY": encryption_key,
        "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
        "TOPIC_CONNECTION_DISCONNECTED": stack.topics["connection.disconnected"],
    }
    async with stack.reader("token.revoked") as reader:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "stream_app", "disconnect", str(created.user_id), "gmail"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        event = await reader.wait_for(_about(created.user_id), timeout=30)

    assert done.stdout.startswith("published connection.disconnected ")
    assert event["reason"] == "operator" and event["revocation"] == "revoked"
    assert stack.sandbox.state.grant(grant["grant_id"]).revoked  # type: ignore[union-attr]


async def test_a_disconnect_waits_for_the_refresh_in_flight_and_revokes_the_tokens_it_rotated(
    make_service: ServiceFactory, sandbox: SandboxServer
) -> None:
    """Discord rotates its refresh token at every refresh: revoking the one read before a
    refresh in flight commits would leave the grant alive under the new one."""
    service = make_service()
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, "discord", expires_in=timedelta(hours=1)
    )
    disconnector = Disconnector(
        service.database,
        service.cipher,
        RevocationClient(service.http, service.settings),
        service.settings.topic_names(),
        lease_seconds=service.settings.refresh_lease_seconds,
        hasher=service.hash_user_id,
    )
    sandbox.state.latency = 1.0  # the refresh's call is in flight this long
    refreshing = asyncio.create_task(service.engine.refresh(user_id, "discord", trigger="manual"))
    while (row := await _row(service, user_id)).refresh_lease_owner is None:
        assert not refreshing.done(), await refreshing
        await asyncio.sleep(0.01)

    disconnected = await disconnector.apply(ConnectionDisconnected(user_id=user_id, platform="discord"))
    refreshed = await refreshing

    assert refreshed.outcome == "refreshed"  # committed before the disconnect, which waited for its lease
    assert disconnected.event is not None and disconnected.event.revocation == "revoked"
    truth = sandbox.state.grant(grant["grant_id"])
    assert truth is not None and truth.refresh_count == 1 and truth.revoked
    (revocation,) = _revocations_of(sandbox, grant["grant_id"])
    assert revocation["live_token"] is True  # the rotated refresh token, not the spent one
    row = await _row(service, user_id)
    assert row.status == "disconnected" and row.refresh_token is None and row.refresh_lease_owner is None


async def _row(service: TokenService, user_id: uuid.UUID) -> ConnectionRow:
    async with service.database.sessions() as session:
        row = await get_connection(session, user_id, "discord")
    assert row is not None
    return row
