"""The leak test on the embedded SQLite default (no DATABASE_URL) at DEBUG: aiosqlite logs every
call with its bound parameters, so without its logger capped raw user ids, ciphertexts and the
refresh tokens' rows reach the log. Nothing of a user, no token, no client secret, no key may."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from stream_app.crypto import TokenCipher
from stream_app.sandbox import SandboxServer
from tests.integration.conftest import OUTCOME_TOPICS, Stack
from tests.integration.test_no_leaks import _needles
from tests.support.infra import free_port
from tests.support.kafka import create_topics
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.kafka]


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
        "METRICS_HOST": "127.0.0.1",
        "METRICS_PORT": str(free_port()),
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


async def test_no_user_id_token_or_secret_reaches_the_debug_log_on_the_sqlite_default(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    due = timedelta(minutes=2)
    users = [(await stack.connect(platform, expires_in=due))[0] for platform in ("spotify", "discord", "slack")]
    revoked = stack.sandbox.create_grant("x")
    stack.sandbox.state.revoke(revoked["grant_id"])
    users.append((await stack.connect("x", expires_in=due, grant=revoked))[0])
    stack.sandbox.state.add_fault({"platform": "reddit", "mode": "echo_token"})
    users.append((await stack.connect("reddit", expires_in=due))[0])

    async with stack.reader(*OUTCOME_TOPICS) as reader:
        for user_id in users:
            await reader.wait_for(_outcome_of(str(user_id)), timeout=90)
    stack.sandbox.state.clear_faults()

    log = stack.worker.log()
    assert (Path(stack.worker.log_path.parent) / "token_refresh.db").exists()  # it did run on SQLite
    assert "DEBUG" in log
    # SQLite stores a UUID as 32 hex digits: the form the driver's parameters show.
    assert [user for user in map(str, users) if user in log or user.replace("-", "") in log] == []
    assert [needle for needle in _needles(stack) if needle in log] == []
    assert "SELECT" not in log  # no statement text either (the drivers' and SQLAlchemy's loggers capped)


def _outcome_of(user_id: str) -> Callable[[str, dict[str, Any]], bool]:
    return lambda _topic, event: event.get("user_id") == user_id
