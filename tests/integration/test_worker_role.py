"""The worker's least-privilege database role (deploy/postgres/worker-role.sql, what the compose
file's Postgres runs at its first start): created as the script creates it, before the
migrations as in compose, then a real worker runs on it (ingest, scan, lease, refresh, outbox,
relay) and its housekeeping deletes run too, while DDL is refused."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from stream_app.crypto import TokenCipher
from stream_app.db import Database
from stream_app.db.migrate import upgrade_to_head
from stream_app.db.outbox_retention import prune_published
from stream_app.db.processed import forget_processed_before
from stream_app.sandbox import SandboxServer
from tests.integration.conftest import OUTCOME_TOPICS, Stack
from tests.support.databases import administer, database_url
from tests.support.infra import free_port, require_postgres
from tests.support.kafka import create_topics
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

ROLE_SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "postgres" / "worker-role.sql"


def psql_as_superuser(database: str, sql: str, **variables: str) -> None:
    """psql as the cluster's superuser (the OS user postgres, as scripts/postgres_local.py does),
    the way the postgres image's init runs deploy/postgres/10-worker-role.sh."""
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else ["sudo", "-n", "-u", "postgres"]
    port = str(make_url(require_postgres()).port or 5432)
    arguments = [f"{name}={value}" for name, value in variables.items()]
    command = [*as_postgres, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-p", port, "-d", database]
    for argument in arguments:
        command += ["-v", argument]
    subprocess.run(command, input=sql, text=True, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def worker_role_database() -> Iterator[tuple[str, str]]:
    """(owner URL, worker-role URL) of a new database set up as compose sets it up."""
    server_url = require_postgres()
    owner = make_url(server_url).username or "token_refresh"
    name = f"token_refresh_role_{uuid.uuid4().hex[:8]}"
    role, password = f"token_refresh_worker_{uuid.uuid4().hex[:8]}", secrets.token_hex(16)
    asyncio.run(administer(server_url, f'CREATE DATABASE "{name}"'))
    try:
        psql_as_superuser(name, ROLE_SCRIPT.read_text(), owner=owner, worker=role, worker_password=password)
        owner_url = database_url(server_url, name)
        asyncio.run(_migrate(owner_url))
        worker_url = make_url(owner_url).set(username=role, password=password).render_as_string(hide_password=False)
        yield owner_url, worker_url
    finally:
        asyncio.run(administer(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        psql_as_superuser("postgres", f'DROP ROLE IF EXISTS "{role}"')


async def _migrate(url: str) -> None:
    database = Database(url)
    try:
        await upgrade_to_head(database)
    finally:
        await database.dispose()


async def test_the_worker_role_cannot_change_the_schema(worker_role_database: tuple[str, str]) -> None:
    _, worker_url = worker_role_database
    database = Database(worker_url)
    try:
        for statement in (
            "CREATE TABLE intruder (id int)",
            "DROP TABLE outbox_events",
            "ALTER TABLE platform_connections ADD COLUMN intruder int",
            "TRUNCATE platform_connections",
            "DROP INDEX idx_platform_connections_status",
        ):
            with pytest.raises(ProgrammingError, match=r"permission denied|must be owner"):
                async with database.transaction() as session:
                    await session.execute(text(statement))
    finally:
        await database.dispose()


async def test_a_worker_runs_on_the_least_privileged_role(
    worker_role_database: tuple[str, str],
    kafka_bootstrap: str,
    sandbox: SandboxServer,
    encryption_key: str,
    tmp_path: Path,
) -> None:
    _, worker_url = worker_role_database
    suffix = uuid.uuid4().hex[:8]
    topics = {name: f"{name}.{suffix}" for name in ("connection.created", "token.expiring", *OUTCOME_TOPICS)}
    await create_topics(kafka_bootstrap, [*topics.values(), *(f"{topics[n]}.dlq" for n in topics)])
    env = {
        "ENCRYPTION_KEY": encryption_key,
        "DATABASE_URL": worker_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_APP_ID": f"token-refresh-role-{suffix}",
        "SCAN_INTERVAL_SECONDS": "2",
        "KAFKA_SESSION_TIMEOUT_SECONDS": "6",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(free_port()),
        "TOKEN_SPOOL_DIR": str(tmp_path / "spool"),
        **{f"TOPIC_{name.upper().replace('.', '_')}": topic for name, topic in topics.items()},
        **sandbox.service_env(),
    }
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    stack = Stack(kafka_bootstrap, worker_url, sandbox, TokenCipher(encryption_key), topics, worker)
    try:
        worker.wait_until_logged("Ready", timeout=90)
        async with stack.reader("token.refreshed", "token.refresh_failed", "token.needs_reauth") as reader:
            due, _ = await stack.connect("spotify", expires_in=timedelta(minutes=2))  # refreshed via the scan
            outcome = await reader.wait_for(lambda _t, e: e.get("user_id") == str(due), timeout=90)
        assert outcome["event_type"] == "token.refreshed", outcome
        row = await stack.row(due, "spotify")
        assert row is not None and row.last_sync_status == "success"
    finally:
        assert worker.stop()
    assert "permission denied" not in worker.log()

    # The leader's housekeeping, as the same role.
    database = Database(worker_url)
    try:
        tomorrow = datetime.now(UTC).replace(tzinfo=None) + timedelta(days=1)
        assert await prune_published(database, tomorrow) >= 1
        async with database.transaction() as session:
            assert await forget_processed_before(session, tomorrow) >= 1
    finally:
        await database.dispose()
