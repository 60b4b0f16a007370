"""The service for real, on one machine: `make run`.

Local Kafka (already started by make), the embedded SQLite default (DATABASE_URL unset),
the provider sandbox, a worker process, and a few demo connections with short-lived
tokens, so refreshes (and one re-auth) scroll by. Twitch's client is refused for its first
minute (a bad client secret, then fixed): its connections end in `error`, to be recovered from
the dashboard the worker serves (the URL and the admin token are printed). Ctrl-C stops everything.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas import ConnectionCreated
from stream_app.crypto import TokenCipher, generate_key
from stream_app.kafka_client import ensure_topics
from stream_app.sandbox import SandboxServer
from stream_app.settings import Settings

REPO = Path(__file__).resolve().parent.parent
WORKDIR = REPO / ".local" / "demo"
BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
ACCESS_TOKEN_LIFETIME = 60  # seconds: the sandbox issues short tokens so refreshes come often
DEMO_CONNECTIONS = [("spotify", 30), ("discord", 40), ("google_calendar", 50), ("youtube", 70)]
# Connections of the platform whose client the sandbox refuses for CLIENT_REFUSED_SECONDS.
REFUSED_PLATFORM, REFUSED_CONNECTIONS, CLIENT_REFUSED_SECONDS = "twitch", 3, 60
HTTP_PORT = os.environ.get("HTTP_PORT", "9464")
OUTCOMES = ("token.refreshed", "token.needs_reauth", "token.refresh_failed")


def demo_env(sandbox: SandboxServer, key: str, admin_token: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name != "DATABASE_URL"}
    return (
        env
        | sandbox.service_env()
        | {
            "ENCRYPTION_KEY": key,
            "KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP,
            "KAFKA_APP_ID": f"token-refresh-demo-{uuid.uuid4().hex[:6]}",
            "REFRESH_BUFFER_SECONDS": "20",
            "SCAN_INTERVAL_SECONDS": "5",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": HTTP_PORT,
            "ADMIN_TOKENS": admin_token,
            "PYTHONUNBUFFERED": "1",
        }
    )


async def publish_connections(sandbox: SandboxServer, cipher: TokenCipher) -> None:
    now = datetime.now(UTC)
    events = []
    for platform, expires_in in DEMO_CONNECTIONS:
        grant = sandbox.create_grant(platform, expires_in=ACCESS_TOKEN_LIFETIME)
        events.append(_connection(platform, grant, cipher, now + timedelta(seconds=expires_in)))
    for _ in range(REFUSED_CONNECTIONS):
        grant = sandbox.create_grant(REFUSED_PLATFORM, expires_in=ACCESS_TOKEN_LIFETIME)
        events.append(_connection(REFUSED_PLATFORM, grant, cipher, now + timedelta(seconds=15)))
    sandbox.state.add_fault_rule(
        {"platform": REFUSED_PLATFORM, "mode": "invalid_client", "probability": 1.0, "duration": CLIENT_REFUSED_SECONDS}
    )
    revoked = sandbox.create_grant("spotify")
    sandbox.state.revoke(revoked["grant_id"])
    events.append(_connection("spotify", revoked, cipher, now + timedelta(seconds=15)))
    events.append(
        ConnectionCreated(
            user_id=uuid.uuid4(),
            platform="github",
            access_token=cipher.encrypt("ghp_demo_personal_access_token"),
            refresh_token=None,
            token_expires_at=None,
        )
    )
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait("connection.created", event.to_bytes(), key=event.key.encode())
            print(f"demo: published connection.created {event.platform:<16} user {event.user_id}")
    finally:
        await producer.stop()


def _connection(platform: str, grant: dict, cipher: TokenCipher, expires_at: datetime) -> ConnectionCreated:
    return ConnectionCreated(
        user_id=uuid.uuid4(),
        platform=platform,
        access_token=cipher.encrypt(grant["live_access_token"]),
        refresh_token=cipher.encrypt(grant["live_refresh_token"]),
        token_expires_at=expires_at,
    )


async def follow_outcomes() -> None:
    consumer = AIOKafkaConsumer(*OUTCOMES, bootstrap_servers=BOOTSTRAP, auto_offset_reset="latest")
    await consumer.start()
    try:
        async for record in consumer:
            event = json.loads(record.value)
            details = {k: v for k, v in event.items() if k in ("expires_in", "reason", "error_class", "attempts")}
            print(f"demo: {record.topic:<21} {event['platform']:<16} {json.dumps(details)}")
    finally:
        await consumer.stop()


async def main() -> None:
    shutil.rmtree(WORKDIR, ignore_errors=True)  # the sandbox's grants are new every run
    WORKDIR.mkdir(parents=True)
    key, admin_token = generate_key(), secrets.token_hex(24)
    with SandboxServer() as sandbox:
        print(f"demo: provider sandbox at {sandbox.base_url}; database {WORKDIR / 'token_refresh.db'}")
        print(f"demo: dashboard at http://127.0.0.1:{HTTP_PORT}/dashboard, admin token {admin_token}")
        print(
            f"demo: {REFUSED_PLATFORM}'s client is refused for {CLIENT_REFUSED_SECONDS} s; then recover its "
            "`error` connections there (bulk refresh: platform twitch, status error)"
        )
        env = demo_env(sandbox, key, admin_token)
        await ensure_topics(Settings(encryption_key=key, kafka_bootstrap_servers=BOOTSTRAP))
        worker = subprocess.Popen([sys.executable, "-m", "stream_app", "worker"], env=env, cwd=WORKDIR)
        follower = asyncio.create_task(follow_outcomes())
        try:
            await asyncio.sleep(3)
            await publish_connections(sandbox, TokenCipher(key))
            while worker.poll() is None:
                await asyncio.sleep(0.5)
            raise SystemExit(f"demo: worker exited with {worker.returncode}")
        finally:
            follower.cancel()
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                worker.wait(30)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        print("demo: stopped")
