"""Taking over the Node (seed) service's database (docs/takeover.md), on real Postgres and Kafka.

The seed's table is created exactly as its guide does, with rows encrypted as Node's
``encryptToken`` does (16-byte IV); ``token-refresh migrate`` refuses it and points to
``--adopt``; ``--adopt`` takes it over without touching the seed's data and is a no-op the
second time; a real worker then refreshes rows that the Node callback or an operator writes
in the seed's shape (INSERT without this service's columns, UPDATE of token_expires_at).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import text

from stream_app.crypto import is_unbound
from stream_app.db import Database
from stream_app.db.migrate import head_revision
from stream_app.sandbox import SandboxServer
from stream_app.scheduler import scan_requests
from stream_app.settings import Settings
from tests.support.databases import administer, database_url, drop_database
from tests.support.infra import require_postgres
from tests.support.kafka import create_topics
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

# The seed guide's "Database Schema", verbatim, after the users table it references.
SEED_SCHEMA = """
CREATE TABLE users (id UUID PRIMARY KEY DEFAULT gen_random_uuid());

CREATE TABLE platform_connections (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  platform TEXT NOT NULL,

  -- Encrypted OAuth tokens
  access_token TEXT,
  refresh_token TEXT,
  token_expires_at TIMESTAMP,

  -- Connection status
  status TEXT DEFAULT 'connected'
    CHECK (status IN ('connected', 'token_expired', 'needs_reauth', 'disconnected', 'error')),

  -- Sync tracking
  last_sync_status TEXT DEFAULT 'pending',
  last_sync_error TEXT,

  -- Timestamps
  connected_at TIMESTAMP DEFAULT NOW(),
  updated_at TIMESTAMP DEFAULT NOW(),

  UNIQUE(user_id, platform)
);

-- Indexes for performance
CREATE INDEX idx_platform_connections_status
  ON platform_connections(status)
  WHERE status IN ('connected', 'token_expired');

CREATE INDEX idx_platform_connections_expiry
  ON platform_connections(token_expires_at)
  WHERE token_expires_at IS NOT NULL;
"""
SEED_COLUMNS = (
    "id, user_id, platform, access_token, refresh_token, token_expires_at, status, "
    "last_sync_status, last_sync_error, connected_at, updated_at"
)
EXIT_CONFIGURATION = 2


def node_encrypt(key_hex: str, plaintext: str) -> str:
    """What the seed's ``encryptToken`` stores: AES-256-GCM, a 16-byte IV, ``iv:authTag:ciphertext``."""
    iv = os.urandom(16)
    sealed = AESGCM(bytes.fromhex(key_hex)).encrypt(iv, plaintext.encode(), None)
    return f"{iv.hex()}:{sealed[-16:].hex()}:{sealed[:-16].hex()}"


def utc_in(seconds: float) -> datetime:
    """A naive UTC time, as the seed's TIMESTAMP columns hold them."""
    return datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=seconds)


@pytest.fixture
def empty_database_url() -> Iterator[str]:
    """A database of this test's own with no table at all (the seed's schema goes in by hand)."""
    server_url = require_postgres()
    name = f"takeover_{uuid.uuid4().hex[:8]}"
    asyncio.run(administer(server_url, f'CREATE DATABASE "{name}"'))
    try:
        yield database_url(server_url, name)
    finally:
        asyncio.run(drop_database(server_url, name))


@pytest.fixture
async def seed_database(empty_database_url: str) -> AsyncIterator[Database]:
    database = Database(empty_database_url)
    await sql(database, SEED_SCHEMA)
    yield database
    await database.dispose()


async def sql(database: Database, statement: str, **parameters: Any) -> list[Any]:
    async with database.transaction() as session:
        if not parameters and ";" in statement:  # a script, run as one simple query
            raw = await (await session.connection()).get_raw_connection()
            await raw.driver_connection.execute(statement)  # type: ignore[union-attr]
            return []
        result = await session.execute(text(statement), parameters)
        return list(result.all()) if statement.lstrip().upper().startswith("SELECT") else []


async def node_connects(
    database: Database, key: str, platform: str, grant: dict[str, Any], expires_in: float
) -> uuid.UUID:
    """The Node OAuth callback: a user, and a row with only the seed's columns."""
    user_id = uuid.uuid4()
    await sql(database, "INSERT INTO users (id) VALUES (:id)", id=user_id)
    await sql(
        database,
        "INSERT INTO platform_connections (user_id, platform, access_token, refresh_token, token_expires_at) "
        "VALUES (:user_id, :platform, :access, :refresh, :expires)",
        user_id=user_id,
        platform=platform,
        access=node_encrypt(key, grant["live_access_token"]),
        refresh=node_encrypt(key, grant["live_refresh_token"]),
        expires=utc_in(expires_in),
    )
    return user_id


async def migrate(url: str, key: str, *flags: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stream_app",
        "migrate",
        *flags,
        env={**os.environ, "DATABASE_URL": url, "ENCRYPTION_KEY": key},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def snapshot(database: Database) -> dict[str, Any]:
    """The schema (columns, indexes, triggers, revision) and every row, in full."""
    stamped = await sql(database, "SELECT to_regclass('alembic_version') IS NOT NULL")
    return {
        "columns": await sql(
            database,
            "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
        ),
        "indexes": await sql(database, "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"),
        "triggers": await sql(database, "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1"),
        "revision": await sql(database, "SELECT version_num FROM alembic_version") if stamped[0][0] else None,
        "rows": await sql(database, "SELECT * FROM platform_connections ORDER BY id"),
    }


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


async def test_plain_migrate_on_the_seed_table_says_to_adopt_it(seed_database: Database, encryption_key: str) -> None:
    before = await snapshot(seed_database)
    url = seed_database.engine.url.render_as_string(hide_password=False)
    code, _out, err = await migrate(url, encryption_key)
    assert code == EXIT_CONFIGURATION
    assert "token-refresh migrate --adopt" in one_line(err)
    assert await snapshot(seed_database) == before


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        # A partial migration: one of this service's columns, and no stamp.
        ("ALTER TABLE platform_connections ADD COLUMN version integer NOT NULL DEFAULT 0", "partial migration"),
        (
            "ALTER TABLE platform_connections ALTER COLUMN token_expires_at TYPE timestamp with time zone",
            "token_expires_at is timestamp with time zone, not timestamp without time zone",
        ),
        ("ALTER TABLE platform_connections DROP CONSTRAINT platform_connections_user_id_platform_key", "UNIQUE"),
        ("ALTER TABLE platform_connections ADD COLUMN tenant text NOT NULL", "tenant is NOT NULL without a default"),
    ],
    ids=["partly-migrated", "timestamptz", "no-unique", "foreign-not-null"],
)
async def test_adopt_refuses_another_shape_in_one_line(
    seed_database: Database, encryption_key: str, change: str, refusal: str
) -> None:
    await sql(seed_database, change)
    before = await snapshot(seed_database)
    url = seed_database.engine.url.render_as_string(hide_password=False)
    for flags in (("--adopt",), ()):
        code, _out, err = await migrate(url, encryption_key, *flags)
        assert code == EXIT_CONFIGURATION
        assert refusal in one_line(err)
    assert await snapshot(seed_database) == before


async def test_takeover_of_a_node_database(
    seed_database: Database,
    encryption_key: str,
    kafka_bootstrap: str,
    sandbox: SandboxServer,
    tmp_path: Path,
) -> None:
    db, key = seed_database, encryption_key
    url = db.engine.url.render_as_string(hide_password=False)
    # The Node deployment's rows: one due within two minutes, one due in an hour, one that
    # needs re-authentication, one that stays untouched (not due: it must not be refreshed).
    due = await node_connects(db, key, "spotify", sandbox.create_grant("spotify"), expires_in=90)
    updated_later = await node_connects(db, key, "discord", sandbox.create_grant("discord"), expires_in=3600)
    reconnected_later = await node_connects(db, key, "youtube", sandbox.create_grant("youtube"), expires_in=3600)
    await sql(db, "UPDATE platform_connections SET status = 'needs_reauth' WHERE user_id = :u", u=reconnected_later)
    untouched = await node_connects(db, key, "gmail", sandbox.create_grant("gmail"), expires_in=3600)
    # An expiry edited by hand to the calendar's start: due since forever, not a year BC.
    ancient = await node_connects(db, key, "spotify", sandbox.create_grant("spotify"), expires_in=3600)
    await sql(db, "UPDATE platform_connections SET token_expires_at = '0001-01-01' WHERE user_id = :u", u=ancient)
    seed_rows = await sql(db, f"SELECT {SEED_COLUMNS} FROM platform_connections ORDER BY id")  # noqa: S608

    code, out, err = await migrate(url, key, "--adopt")
    assert code == 0, err
    assert "adopted the Node service's platform_connections (5 rows)" in out
    assert await sql(db, f"SELECT {SEED_COLUMNS} FROM platform_connections ORDER BY id") == seed_rows  # noqa: S608
    adopted = await snapshot(db)
    assert adopted["revision"] == [(head_revision(),)]

    code, out, err = await migrate(url, key, "--adopt")
    assert code == 0, err
    assert "nothing to adopt" in out
    assert await snapshot(db) == adopted

    worker = await start_worker(url, key, kafka_bootstrap, sandbox, tmp_path)
    try:
        await asyncio.to_thread(worker.wait_until_logged, "Ready", 90)
        # Written in the seed's shape while the service runs: the Node callback connects a new
        # user and reconnects one, and an operator moves an expiry.
        inserted = await node_connects(db, key, "spotify", sandbox.create_grant("spotify"), expires_in=60)
        grant = sandbox.create_grant("youtube")
        await sql(
            db,
            "UPDATE platform_connections SET access_token = :a, refresh_token = :r, token_expires_at = :e, "
            "status = 'connected', last_sync_status = 'pending', updated_at = now() WHERE user_id = :u",
            a=node_encrypt(key, grant["live_access_token"]),
            r=node_encrypt(key, grant["live_refresh_token"]),
            e=utc_in(60),
            u=reconnected_later,
        )
        await sql(
            db,
            "UPDATE platform_connections SET token_expires_at = :e WHERE user_id = :u",
            e=utc_in(60),
            u=updated_later,
        )
        # A status written as NULL (the seed's column allows it): taken for its default, connected.
        null_status = await node_connects(db, key, "discord", sandbox.create_grant("discord"), expires_in=60)
        await sql(db, "UPDATE platform_connections SET status = NULL WHERE user_id = :u", u=null_status)
        for user_id in (due, ancient, inserted, reconnected_later, updated_later, null_status):
            await refreshed(db, user_id)
    finally:
        await asyncio.to_thread(worker.stop)
    assert (await sql(db, "SELECT last_refreshed_at FROM platform_connections WHERE user_id = :u", u=untouched)) == [
        (None,)
    ]


async def refreshed(database: Database, user_id: uuid.UUID, timeout: float = 60.0) -> None:
    """Poll until the worker has refreshed the user's connection (a new, bound access token
    that expires an hour or more from now)."""
    deadline = time.monotonic() + timeout
    query = (
        "SELECT last_sync_status, last_refreshed_at IS NOT NULL, token_expires_at > :later, access_token "
        "FROM platform_connections WHERE user_id = :u"
    )
    while True:
        [(sync_status, was_refreshed, expires_later, access_token)] = await sql(
            database, query, u=user_id, later=utc_in(1800)
        )
        if was_refreshed:
            assert (sync_status, expires_later) == ("success", True)
            assert not is_unbound(access_token)  # stored the service's way now
            return
        assert time.monotonic() < deadline, f"connection of {user_id} not refreshed within {timeout:g}s"
        await asyncio.sleep(0.5)


async def start_worker(url: str, key: str, bootstrap: str, sandbox: SandboxServer, workdir: Path) -> WorkerProcess:
    suffix = uuid.uuid4().hex[:8]
    names = ("connection.created", "token.expiring", "token.refreshed", "token.needs_reauth", "token.refresh_failed")
    topics = {name: f"{name}.{suffix}" for name in names}
    dead_letters = [f"{topics[name]}.dlq" for name in ("connection.created", "token.expiring")]
    await create_topics(bootstrap, [*topics.values(), *dead_letters])
    env = {
        "ENCRYPTION_KEY": key,
        "DATABASE_URL": url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_APP_ID": f"token-refresh-takeover-{suffix}",
        "SCAN_INTERVAL_SECONDS": "2",
        "LOG_LEVEL": "INFO",
        # No HTTP server (METRICS_PORT was renamed HTTP_PORT by issue 10's API; either, in transition).
        ("HTTP_PORT" if "http_port" in Settings.model_fields else "METRICS_PORT"): "0",
        "TOKEN_SPOOL_DIR": str(workdir / "spool"),
        **{f"TOPIC_{name.upper().replace('.', '_')}": topic for name, topic in topics.items()},
        **sandbox.service_env(),
    }
    return WorkerProcess(env, workdir / "worker.log").start()


async def test_an_expiry_edited_to_the_calendars_start_is_scanned(own_database_url: str, encryption_key: str) -> None:
    """An operator's ``UPDATE ... SET token_expires_at = '0001-01-01'`` schedules the row as due
    since forever, not in a year BC that would break every scan reaching it."""
    database = Database(own_database_url)
    try:
        user_id = uuid.uuid4()
        await sql(
            database,
            "INSERT INTO platform_connections (user_id, platform, refresh_token, token_expires_at) "
            "VALUES (:u, 'spotify', 'sealed', :e)",
            u=user_id,
            e=utc_in(3600),
        )
        await sql(
            database, "UPDATE platform_connections SET token_expires_at = '0001-01-01' WHERE user_id = :u", u=user_id
        )
        settings = Settings(encryption_key=encryption_key, database_url=own_database_url)
        claimed: list[uuid.UUID] = []

        async def collect(page: Any) -> None:
            claimed.extend(row.user_id for row in page.rows)

        await scan_requests(database, settings, collect)
        assert claimed == [user_id]
    finally:
        await database.dispose()
