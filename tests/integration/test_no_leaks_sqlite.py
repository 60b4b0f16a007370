"""The leak test on the embedded SQLite default (no DATABASE_URL) at DEBUG: aiosqlite logs every
call with its bound parameters, so without its logger capped raw user ids, ciphertexts and the
refresh tokens' rows reach the log. The same run and search as on Postgres (test_no_leaks.py,
tests/support/leaks.py): nothing of a user, no token, no client secret, no key, in any encoding."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_app.crypto import TokenCipher
from stream_app.sandbox import SandboxServer
from tests.integration.conftest import OUTCOME_TOPICS, Stack
from tests.support.infra import free_port
from tests.support.kafka import create_topics
from tests.support.leaks import audit_run, hostile_credentials, run_scenario
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.kafka]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    """Client secrets that change under every encoding."""
    with SandboxServer(credentials=hostile_credentials()) as server:
        yield server


@pytest.fixture(scope="module")
def sqlite_stack(
    kafka_bootstrap: str, sandbox: SandboxServer, encryption_key: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    suffix = uuid.uuid4().hex[:8]
    topics = {name: f"{name}.{suffix}" for name in ("connection.created", "token.expiring", *OUTCOME_TOPICS)}
    asyncio.run(create_topics(kafka_bootstrap, [*topics.values(), *(f"{topics[n]}.dlq" for n in topics)]))
    workdir = tmp_path_factory.mktemp("sqlite-worker")
    env = {
        "ENCRYPTION_KEY": encryption_key,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_APP_ID": f"token-refresh-sqlite-{suffix}",
        "SCAN_INTERVAL_SECONDS": "2",
        "RETRY_BASE_DELAY_SECONDS": "0.05",
        "LOG_LEVEL": "DEBUG",
        "KAFKA_SESSION_TIMEOUT_SECONDS": "6",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(free_port()),
        **{f"TOPIC_{name.upper().replace('.', '_')}": topic for name, topic in topics.items()},
        **sandbox.service_env(),
    }
    worker = WorkerProcess(env, workdir / "worker.log")
    worker.env.pop("DATABASE_URL", None)  # the embedded default, in the worker's directory
    worker.start()
    database_url = f"sqlite+aiosqlite:///{Path(workdir) / 'token_refresh.db'}"
    stack = Stack(kafka_bootstrap, database_url, sandbox, TokenCipher(encryption_key), topics, worker)
    try:
        worker.wait_until_logged("Ready", timeout=90)
        yield stack
    finally:
        stack.worker.stop()


async def test_no_user_id_token_or_secret_in_any_encoding_leaks_on_the_sqlite_default(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    seen = await run_scenario(stack)

    audit = await audit_run(stack, seen)

    assert (Path(stack.worker.log_path.parent) / "token_refresh.db").exists()  # it did run on SQLite
    assert not audit.blind_spots, "\n".join(audit.blind_spots)
    assert not audit.leaks, "\n".join(audit.leaks)
    assert "SELECT" not in stack.worker.log()  # no statement text either (the drivers' loggers capped)
