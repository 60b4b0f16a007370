"""`token-refresh status` and `token-refresh api` as an operator runs them, on real Postgres and
Kafka: the seed's monitoring queries, the outbox, dead letters and a worker's circuits."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import sys
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from stream_app.http import HttpServer, create_app
from stream_app.sandbox import SandboxServer
from tests.integration.conftest import ServiceFactory
from tests.integration.test_http_api import FakeWorker
from tests.support.connections import seed_connection

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]


async def cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stream_app",
        *args,
        env={"PATH": os.environ["PATH"], "COLUMNS": "200", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_status_shows_what_the_database_and_the_workers_hold(
    make_service: ServiceFactory,
    own_database_url: str,
    sandbox: SandboxServer,
    encryption_key: str,
    kafka_bootstrap: str,
) -> None:
    service = make_service(database_url=own_database_url)
    users = {}
    for name, platform, expires in [
        ("soon", "spotify", timedelta(minutes=20)),
        ("later", "spotify", timedelta(hours=3)),
        ("revoked", "discord", timedelta(hours=3)),
        ("broken", "discord", timedelta(minutes=40)),
    ]:
        users[name], _ = await seed_connection(service.database, service.cipher, sandbox, platform, expires_in=expires)
    async with service.database.transaction() as session:
        await session.execute(
            text("UPDATE platform_connections SET status = 'needs_reauth' WHERE user_id = :u"), {"u": users["revoked"]}
        )
        await session.execute(
            text(
                "UPDATE platform_connections SET status = 'error', last_sync_status = 'error', "
                "last_sync_error = 'invalid_client: the client credentials were refused (HTTP 401)' WHERE user_id = :u"
            ),
            {"u": users["broken"]},
        )
        await session.execute(
            text(
                "INSERT INTO outbox_events (event_id, topic, key, payload, created_at) "
                "VALUES (:id, 'token.refreshed', 'k', 'v', (now() at time zone 'utc') - interval '5 minutes')"
            ),
            {"id": uuid.uuid4()},
        )
    worker = FakeWorker()
    server = HttpServer(create_app(service, worker), "127.0.0.1", 0)
    server.start()
    env = {
        "DATABASE_URL": own_database_url,
        "ENCRYPTION_KEY": encryption_key,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
    }
    try:
        dead_worker = f"http://127.0.0.1:{free_port()}"
        worker_url = f"http://127.0.0.1:{server.port}"
        code, out, err = await cli("status", "--json", "--worker", worker_url, "--worker", dead_worker, env=env)
        assert code == 0, err
        report = json.loads(out)
        assert report["expiring_within_hour"] == {"discord": 1, "spotify": 1}
        assert report["needing_reauth"] == {"discord": 1}
        assert report["failed_refreshes"] == [
            ["discord", "invalid_client: the client credentials were refused (HTTP 401)", 1]
        ]
        assert report["connections"] == {
            "discord": {"error": 1, "needs_reauth": 1},
            "spotify": {"connected": 2},
        }
        assert report["outbox_unpublished"] == 1 and 290 < report["outbox_oldest_age_seconds"] < 400
        assert report["circuits"][worker_url] == {"discord": "open", "spotify": "closed"}
        assert report["circuits"][dead_worker].startswith("unreachable")

        code, out, err = await cli("status", "--worker", worker_url, env=env)
        assert code == 0, err
        for shown in ("Tokens expiring in the next hour", "needing re-auth", "invalid_client", "open"):
            assert shown in out, shown
    finally:
        await server.stop()


async def test_the_api_command_serves_the_api_alone(
    own_database_url: str, encryption_key: str, kafka_bootstrap: str
) -> None:
    port, admin = free_port(), secrets.token_hex(20)
    env = {
        "PATH": os.environ["PATH"],
        "DATABASE_URL": own_database_url,
        "ENCRYPTION_KEY": encryption_key,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(port),
        "ADMIN_TOKENS": admin,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stream_app", "api", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        ready = await _poll(f"http://127.0.0.1:{port}/readyz")
        assert ready.status_code == 200, ready.text
        assert set(ready.json()["checks"]) == {"database", "migrations"}  # no worker here
        async with httpx.AsyncClient() as http:
            listing = await http.get(
                f"http://127.0.0.1:{port}/connections", headers={"Authorization": f"Bearer {admin}"}
            )
        assert listing.status_code == 200 and listing.json() == {"connections": [], "next_cursor": None}

        taken = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "stream_app", "api", env=env, stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(taken.communicate(), 60)
        assert taken.returncode == 2
        assert err.decode().strip().splitlines() == [
            f"token-refresh: configuration error: HTTP_PORT: cannot listen on 127.0.0.1:{port} (Address already in use)"
        ]
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


async def _poll(url: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while True:
            try:
                return await http.get(url)
            except httpx.TransportError:
                assert time.monotonic() < deadline, f"{url} never answered"
                await asyncio.sleep(0.2)
