"""The service for real, on one machine: `make run`.

Local Kafka (already started by make), the embedded SQLite default (DATABASE_URL unset),
the provider sandbox, a worker process, and a few demo connections with short-lived
tokens, so refreshes (and one re-auth) scroll by. Twitch's client is refused for its first
minute (a bad client secret, then fixed): its connections end in `error`, to be recovered from
the dashboard the worker serves (the URL and the admin token are printed). The notifier
(`token-refresh notify`) runs beside the worker with its email channel on: the re-auth email of
the revoked Spotify grant arrives in a local SMTP sink, which prints it. Ctrl-C stops everything.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiosmtpd.controller import Controller

from schemas import ConnectionCreated
from stream_app.crypto import TokenCipher, generate_key
from stream_app.kafka_client import ensure_topics
from stream_app.sandbox import SandboxServer
from stream_app.settings import Settings

REPO = Path(__file__).resolve().parent.parent
WORKDIR = Path(os.environ.get("DEMO_WORKDIR") or REPO / ".local" / "demo")
BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
ACCESS_TOKEN_LIFETIME = 60  # seconds: the sandbox issues short tokens so refreshes come often
DEMO_CONNECTIONS = [("spotify", 30), ("discord", 40), ("google_calendar", 50), ("youtube", 70)]
# Connections of the platform whose client the sandbox refuses for CLIENT_REFUSED_SECONDS.
REFUSED_PLATFORM, REFUSED_CONNECTIONS, CLIENT_REFUSED_SECONDS = "twitch", 3, 60
HTTP_PORT = os.environ.get("HTTP_PORT", "9464")
NOTIFY_HTTP_PORT = os.environ.get("NOTIFY_HTTP_PORT", "9465")
SMTP_SINK_PORT = int(os.environ.get("DEMO_SMTP_PORT", "8025"))
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


def notifier_env(env: dict[str, str]) -> dict[str, str]:
    """The notifier beside the worker: the same broker and database; email on, to the local sink, the
    address from the product's `users` table (the seed's), no quiet hours."""
    return env | {
        "NOTIFY_HTTP_PORT": NOTIFY_HTTP_PORT,
        # The topics hold earlier runs' events, of users this run's `users` table does not know.
        "NOTIFY_OFFSET_RESET": "latest",
        "NOTIFY_EMAIL_SMTP_HOST": "127.0.0.1",
        "NOTIFY_EMAIL_SMTP_PORT": str(SMTP_SINK_PORT),
        "NOTIFY_EMAIL_SMTP_SECURITY": "none",  # the sink is on this machine
        "NOTIFY_EMAIL_FROM": "Token Refresh Demo <noreply@demo.example>",
        "NOTIFY_EMAIL_LOOKUP_SQL": "SELECT email, name FROM users WHERE id = :user_id",
        "NOTIFY_EMAIL_RECONNECT_URL": "https://app.demo.example/connections/{platform}",
    }


def create_users_table(database: Path) -> None:
    """The product's own users table, which the notifier's address lookup reads."""
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, email TEXT NOT NULL, name TEXT)")


def add_user(database: Path, user_id: uuid.UUID, platform: str) -> None:
    with sqlite3.connect(database) as db:
        db.execute(
            "INSERT INTO users (id, email, name) VALUES (?, ?, ?)",
            (str(user_id), f"{platform}-fan-{str(user_id)[:4]}@demo.example", f"Demo {platform} user"),
        )


class PrintingSink:
    """aiosmtpd handler: prints every message the notifier sends."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=default_policy)
        body = message.get_body(preferencelist=("plain",)) if isinstance(message, EmailMessage) else None
        text = body.get_content() if body is not None else ""
        print(f"demo: email  to {message['To']}  subject {message['Subject']!r}")
        for line in text.strip().splitlines():
            print(f"demo: |  {line}")
        return "250 Message accepted"


async def publish_connections(sandbox: SandboxServer, cipher: TokenCipher, database: Path) -> None:
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
    for event in events:
        add_user(database, event.user_id, event.platform)
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
        print(f"demo: local SMTP sink on 127.0.0.1:{SMTP_SINK_PORT}: the notifier's emails are printed here")
        env = demo_env(sandbox, key, admin_token)
        database = WORKDIR / "token_refresh.db"
        create_users_table(database)
        await ensure_topics(Settings(encryption_key=key, kafka_bootstrap_servers=BOOTSTRAP))
        sink = Controller(PrintingSink(), hostname="127.0.0.1", port=SMTP_SINK_PORT)
        sink.start()
        processes = {
            "worker": subprocess.Popen([sys.executable, "-m", "stream_app", "worker"], env=env, cwd=WORKDIR),
            "notifier": subprocess.Popen(
                [sys.executable, "-m", "stream_app", "notify"], env=notifier_env(env), cwd=WORKDIR
            ),
        }
        follower = asyncio.create_task(follow_outcomes())
        try:
            await asyncio.sleep(3)
            await publish_connections(sandbox, TokenCipher(key), database)
            while all(process.poll() is None for process in processes.values()):
                await asyncio.sleep(0.5)
            name, exited = next((n, p) for n, p in processes.items() if p.poll() is not None)
            raise SystemExit(f"demo: {name} exited with {exited.returncode}")
        finally:
            follower.cancel()
            for process in processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes.values():
                process.wait(30)
            sink.stop()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        print("demo: stopped")
