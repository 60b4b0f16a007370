"""What a worker refuses at start, with one line naming the settings: a real client pointed at
the provider sandbox, and a platform that has connections to refresh but no client credentials
(found at start, not one `error` row at a time)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from schemas import ConnectionCreated
from stream_app.cli import cli
from stream_app.crypto import TokenCipher
from stream_app.db import Database
from stream_app.db.migrate import upgrade_to_head
from stream_app.db.models import ConnectionRow
from stream_app.decisions import RefreshPolicy
from stream_app.errors import ConfigurationError
from stream_app.ingest import record_connection
from stream_app.sandbox import SandboxServer
from stream_app.settings import Settings, collect_platform_variables, load_settings
from stream_app.startup_checks import refuse_foreign_credentials_at_the_sandbox, refuse_platforms_without_credentials
from tests.support.infra import free_port

REAL_LOOKING = {"SPOTIFY_CLIENT_ID": "5f0c1e2d3b4a", "SPOTIFY_CLIENT_SECRET": "9a8b7c6d5e4f3a2b1c0d"}


def settings_with(encryption_key: str, **variables: str) -> Settings:
    return load_settings(encryption_key=encryption_key, **collect_platform_variables(variables))


def one_line(exc: pytest.ExceptionInfo[ConfigurationError], *, starting: str) -> str:
    message = str(exc.value)
    assert message.startswith(starting) and "\n" not in message, message
    return message


# --- a real client pointed at the sandbox -------------------------------------------------


async def test_a_real_client_pointed_at_the_sandbox_is_refused(sandbox: SandboxServer, encryption_key: str) -> None:
    settings = settings_with(encryption_key, SPOTIFY_TOKEN_URL=sandbox.token_url("spotify"), **REAL_LOOKING)

    with pytest.raises(ConfigurationError) as caught:
        await refuse_foreign_credentials_at_the_sandbox(settings)

    message = one_line(caught, starting="SPOTIFY_TOKEN_URL: is the provider sandbox")
    assert "SPOTIFY_CLIENT_ID" in message and REAL_LOOKING["SPOTIFY_CLIENT_SECRET"] not in message


async def test_the_sandbox_with_its_own_clients_is_accepted(sandbox: SandboxServer, encryption_key: str) -> None:
    settings = settings_with(encryption_key, **sandbox.service_env())

    await refuse_foreign_credentials_at_the_sandbox(settings)


async def test_a_token_url_that_is_not_a_sandbox_is_accepted(encryption_key: str) -> None:
    async with _http_server(404, b"not found") as url_404, _http_server(200, b'{"ok": true}') as url_other:
        closed = f"http://127.0.0.1:{free_port()}/spotify/token"
        for url in (f"{url_404}/spotify/token", f"{url_other}/spotify/token", closed):
            settings = settings_with(encryption_key, SPOTIFY_TOKEN_URL=url, **REAL_LOOKING)
            await refuse_foreign_credentials_at_the_sandbox(settings)


def test_the_worker_does_not_start_with_a_real_client_at_the_sandbox(
    sandbox: SandboxServer, encryption_key: str, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**sandbox.service_env(), **REAL_LOOKING, "ENCRYPTION_KEY": encryption_key}
    env["KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    result = CliRunner().invoke(cli, ["worker"])

    assert result.exit_code != 0
    [line] = result.stderr.splitlines()
    assert line.startswith("token-refresh: SPOTIFY_TOKEN_URL: is the provider sandbox (a test double)"), line


# --- a platform with connections and no client -------------------------------------------


@pytest.fixture
async def sqlite_database(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'token_refresh.db'}")
    await upgrade_to_head(database)
    yield database
    await database.dispose()


async def _connect(database: Database, encryption_key: str, platform: str) -> uuid.UUID:
    cipher = TokenCipher(encryption_key)
    event = ConnectionCreated(
        user_id=uuid.uuid4(),
        platform=platform,
        access_token=cipher.encrypt(f"access-{uuid.uuid4().hex}"),
        refresh_token=cipher.encrypt(f"refresh-{uuid.uuid4().hex}"),
        token_expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    await record_connection(database, cipher, event, RefreshPolicy())
    return event.user_id


async def test_connections_of_a_platform_without_credentials_are_found_at_start(
    sqlite_database: Database, sandbox: SandboxServer, encryption_key: str
) -> None:
    await _connect(sqlite_database, encryption_key, "spotify")
    await _connect(sqlite_database, encryption_key, "youtube")
    configured = {k: v for k, v in sandbox.service_env().items() if not k.startswith(("SPOTIFY_", "GOOGLE_"))}

    with pytest.raises(ConfigurationError) as caught:
        await refuse_platforms_without_credentials(settings_with(encryption_key, **configured), sqlite_database)

    message = one_line(caught, starting="GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET: not set, but youtube has connections")
    assert "; SPOTIFY_CLIENT_ID, SPOTIFY_CLIENT_SECRET: not set, but spotify has connections" in message
    await refuse_platforms_without_credentials(settings_with(encryption_key, **sandbox.service_env()), sqlite_database)


async def test_connections_no_worker_refreshes_do_not_stop_the_start(
    sqlite_database: Database, encryption_key: str
) -> None:
    """needs_reauth, disconnected and error rows of a platform no longer configured (legacy rows)
    are never refreshed: they do not need a client."""
    for status in ("needs_reauth", "disconnected", "error"):
        user_id = await _connect(sqlite_database, encryption_key, "spotify")
        async with sqlite_database.transaction() as session:
            await session.execute(update(ConnectionRow).where(ConnectionRow.user_id == user_id).values(status=status))
    await _connect(sqlite_database, encryption_key, "github")  # personal access tokens are never refreshed

    await refuse_platforms_without_credentials(settings_with(encryption_key), sqlite_database)


def test_the_worker_does_not_start_with_connections_it_cannot_refresh(
    tmp_path: Path, encryption_key: str, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(_seed_default_database(tmp_path, encryption_key))
    monkeypatch.chdir(tmp_path)  # the SQLite default, in the working directory
    suffix = uuid.uuid4().hex[:8]
    for name in (
        "CONNECTION_CREATED",
        "TOKEN_EXPIRING",
        "TOKEN_REFRESHED",
        "TOKEN_NEEDS_REAUTH",
        "TOKEN_REFRESH_FAILED",
    ):
        monkeypatch.setenv(f"TOPIC_{name}", f"{name.lower()}.{suffix}")
    monkeypatch.setenv("ENCRYPTION_KEY", encryption_key)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)

    result = CliRunner().invoke(cli, ["worker"])

    assert result.exit_code != 0
    assert result.stderr.splitlines() == [
        "token-refresh: DISCORD_CLIENT_ID, DISCORD_CLIENT_SECRET: not set, but discord has connections to refresh "
        "(set them, or disconnect those connections)"
    ]


async def _seed_default_database(directory: Path, encryption_key: str) -> None:
    database = Database(f"sqlite+aiosqlite:///{directory / 'token_refresh.db'}")
    try:
        await upgrade_to_head(database)
        await _connect(database, encryption_key, "discord")
    finally:
        await database.dispose()


# --- helpers ------------------------------------------------------------------------------


class _http_server:
    """A local HTTP server answering every request with one status and body."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.body = status, body
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            head = f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\nContent-Length: {len(self.body)}"
            writer.write(head.encode() + b"\r\nConnection: close\r\n\r\n" + self.body)
            await writer.drain()
            writer.close()

        self.server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: Any) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
