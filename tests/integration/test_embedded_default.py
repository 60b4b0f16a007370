"""The embedded default: with DATABASE_URL unset the service runs on a SQLite file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from stream_app import TokenService
from stream_app.db.connections import get_connection
from stream_app.db.migrate import head_revision, upgrade_to_head
from stream_app.sandbox import SandboxServer
from stream_app.settings import DEFAULT_DATABASE_URL, load_settings
from tests.support.connections import seed_connection


def test_migrate_creates_the_sqlite_file_in_the_working_directory(tmp_path: Path, encryption_key: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stream_app", "migrate"],
        cwd=tmp_path,
        env={"ENCRYPTION_KEY": encryption_key, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"database at revision {head_revision()}" in result.stdout
    with sqlite3.connect(tmp_path / "token_refresh.db") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"platform_connections", "outbox_events", "alembic_version"} <= tables
    assert {"idx_platform_connections_status", "idx_platform_connections_expiry"} <= indexes


async def test_refresh_on_the_sqlite_default(
    tmp_path: Path, encryption_key: str, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in sandbox.service_env().items():
        monkeypatch.setenv(name, value)
    settings = load_settings(encryption_key=encryption_key)
    assert settings.database_url.get_secret_value() == DEFAULT_DATABASE_URL
    service = TokenService(settings)
    try:
        await upgrade_to_head(service.database)
        user_id, grant = await seed_connection(
            service.database, service.cipher, sandbox, "spotify", expires_in=timedelta(minutes=1)
        )
        token = await service.get_valid_access_token(user_id, "spotify")
        assert token == sandbox.state.grant(grant["grant_id"]).live_access_token != grant["live_access_token"]
        async with service.database.sessions() as session:
            row = await get_connection(session, user_id, "spotify")
        assert row is not None and row.last_sync_status == "success" and row.version == 1
    finally:
        await service.aclose()
    assert (tmp_path / "token_refresh.db").exists()
