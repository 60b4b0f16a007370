"""A running stack for integration tests: real Kafka, real Postgres, the sandbox, a worker."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas import ConnectionCreated
from stream_app import TokenService
from stream_app.crypto import TokenCipher
from stream_app.db import Database
from stream_app.db.connections import get_connection
from stream_app.db.models import ConnectionRow
from stream_app.sandbox import SandboxServer
from stream_app.settings import load_settings
from tests.support.infra import free_port
from tests.support.kafka import TopicReader, create_topics, produce
from tests.support.worker import WorkerProcess

OUTCOME_TOPICS = ("token.refreshed", "token.needs_reauth", "token.refresh_failed")
INPUT_TOPICS = ("connection.created", "token.expiring", "connection.disconnected")
# A stack's worker has a topic of its own for each (none left at the shared default names).
STACK_TOPICS = (*INPUT_TOPICS, *OUTCOME_TOPICS, "token.revoked", "provider.circuit_changed")


@dataclass
class Stack:
    bootstrap: str
    database_url: str
    sandbox: SandboxServer
    cipher: TokenCipher
    topics: dict[str, str]
    worker: WorkerProcess

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.worker.env['HTTP_PORT']}/metrics"

    def restart_worker(self, log_name: str) -> WorkerProcess:
        """A new worker process with the same settings (same consumer group), replacing the old."""
        self.worker = WorkerProcess(self.worker.env, self.worker.log_path.with_name(log_name)).start()
        return self.worker

    def reader(self, *default_names: str) -> TopicReader:
        return TopicReader(self.bootstrap, [self.topics[name] for name in default_names])

    async def connect(
        self, platform: str, *, expires_in: timedelta | None, grant: dict[str, Any] | None = None
    ) -> tuple[uuid.UUID, dict[str, Any] | None]:
        """Publish a `connection.created` for a new user, as a producer would."""
        event, grant = self.connection_event(platform, expires_in=expires_in, grant=grant)
        await produce(self.bootstrap, self.topics["connection.created"], [(event.key.encode(), event.to_bytes())])
        return event.user_id, grant

    def connection_event(
        self, platform: str, *, expires_in: timedelta | None, grant: dict[str, Any] | None = None
    ) -> tuple[ConnectionCreated, dict[str, Any] | None]:
        """A `connection.created` for a new user with a fresh sandbox grant (none for GitHub)."""
        if grant is None and platform != "github":
            grant = self.sandbox.create_grant(platform)
        access = grant["live_access_token"] if grant else "ghp_personal_access_token_" + uuid.uuid4().hex
        refresh = grant["live_refresh_token"] if grant else None
        event = ConnectionCreated(
            user_id=uuid.uuid4(),
            platform=platform,
            access_token=self.cipher.encrypt(access),
            refresh_token=self.cipher.encrypt(refresh) if refresh else None,
            token_expires_at=datetime.now(UTC) + expires_in if expires_in is not None else None,
        )
        return event, grant

    async def stored_row(self, user_id: uuid.UUID, platform: str, timeout: float = 30.0) -> ConnectionRow:
        """The connection's row once the worker has stored it (polled; fails after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while (row := await self.row(user_id, platform)) is None:
            assert time.monotonic() < deadline, f"{platform} connection not stored within {timeout:g}s"
            await asyncio.sleep(0.2)
        return row

    async def row(self, user_id: uuid.UUID, platform: str) -> ConnectionRow | None:
        database = Database(self.database_url)
        try:
            async with database.sessions() as session:
                return await get_connection(session, user_id, platform)
        finally:
            await database.dispose()


ServiceFactory = Callable[..., TokenService]


@pytest.fixture
async def make_service(
    postgres_url: str,
    sandbox: SandboxServer,
    encryption_key: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> AsyncIterator[ServiceFactory]:
    """Builds in-process TokenServices on the test database, pointed at the sandbox; settings
    may be overridden. Cleans up the services and the sandbox's faults and latency."""
    for name, value in sandbox.service_env().items():
        monkeypatch.setenv(name, value)
    built: list[TokenService] = []

    def make(**overrides: Any) -> TokenService:
        defaults = {"encryption_key": encryption_key, "database_url": postgres_url}
        settings = load_settings(**{**defaults, "token_spool_dir": tmp_path / "spool", **overrides})
        built.append(TokenService(settings))
        return built[-1]

    yield make
    sandbox.state.clear_faults()
    sandbox.state.latency = 0.0
    for service in built:
        await service.aclose()


@pytest.fixture
def service(make_service: ServiceFactory) -> TokenService:
    return make_service()


@pytest.fixture(scope="module")
def stack(
    kafka_bootstrap: str,
    postgres_url: str,
    sandbox: SandboxServer,
    encryption_key: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    with running_stack(
        kafka_bootstrap, postgres_url, sandbox, encryption_key, tmp_path_factory.mktemp("worker")
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def own_stack(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    module_database_url: str,
    sandbox: SandboxServer,
    encryption_key: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """A worker reading topics of this module's own, on a database of this module's own (for a
    module that judges whole tables, or whose neighbours' rows would get in its way); the module's
    ``STACK_ENV`` (a dict), if any, is added to the worker's settings."""
    env: dict[str, str] = getattr(request.module, "STACK_ENV", {})
    workdir = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    with running_stack(kafka_bootstrap, module_database_url, sandbox, encryption_key, workdir, **env) as stack:
        yield stack


@contextlib.contextmanager
def running_stack(
    kafka_bootstrap: str,
    database_url: str,
    sandbox: SandboxServer,
    encryption_key: str,
    workdir: Path,
    **env_overrides: str,
) -> Iterator[Stack]:
    """A worker on ``database_url`` reading and writing topics of its own (every topic it has a
    setting for, and the input topics' dead-letter topics), pointed at the sandbox; stopped on leaving."""
    suffix = uuid.uuid4().hex[:8]
    topics = {name: f"{name}.{suffix}" for name in STACK_TOPICS}
    dead_letter_topics = [f"{topics[name]}.dlq" for name in INPUT_TOPICS]
    asyncio.run(create_topics(kafka_bootstrap, [*topics.values(), *dead_letter_topics]))
    env = {
        "ENCRYPTION_KEY": encryption_key,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_APP_ID": f"token-refresh-test-{suffix}",
        "SCAN_INTERVAL_SECONDS": "2",
        "RETRY_BASE_DELAY_SECONDS": "0.05",
        "LOG_LEVEL": "DEBUG",
        "KAFKA_SESSION_TIMEOUT_SECONDS": "6",
        "REFRESH_LEASE_SECONDS": "30",
        "HTTP_TIMEOUT_SECONDS": "10",  # a lease outlives three provider calls
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(free_port()),  # a killed worker's leases lapse quickly
        "TOKEN_SPOOL_DIR": str(workdir / "spool"),
        **{f"TOPIC_{name.upper().replace('.', '_')}": topic for name, topic in topics.items()},
        **sandbox.service_env(),
        **env_overrides,
    }
    worker = WorkerProcess(env, workdir / "worker.log").start()
    stack = Stack(kafka_bootstrap, database_url, sandbox, TokenCipher(encryption_key), topics, worker)
    try:
        worker.wait_until_logged("Ready", timeout=90)
        yield stack
    finally:
        stack.worker.stop()
