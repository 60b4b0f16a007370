"""The run's own broker, database and provider sandbox, and the grants every path refreshes.

The broker is chaoskit's ``Kafka`` (scripts/chaoskit/infra.py) on its own port and state
directory; the database is a new one on the local cluster, migrated (tests/support/databases.py);
the sandbox is ``python -m stream_app.sandbox --quiet`` (chaoskit's ``Sandbox``) answering after
``latency`` seconds.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from stream_app.crypto import TokenCipher, generate_key
from stream_app.sandbox.dialects import credential_key, default_credentials

from . import procstat
from .borrowed import REPO, Kafka, Sandbox, create_database, drop_database

PLATFORM = "spotify"  # no rotation: the same grant can be refreshed by every path in turn


@dataclass(frozen=True)
class Grant:
    grant_id: str
    access_token: str
    refresh_token: str

    def __repr__(self) -> str:  # never a token in a traceback or a log line
        return f"Grant({self.grant_id})"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Environment:
    def __init__(
        self,
        *,
        bootstrap: str | None,
        kafka_port: int,
        server_url: str | None,
        sandbox_port: int,
        latency: float,
        keep: bool = False,
    ) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        self.workdir = REPO / ".local" / "bench" / self.run_id
        self.key = generate_key()
        self.cipher = TokenCipher(self.key)
        self.own_kafka = None if bootstrap else Kafka(kafka_port, REPO / ".local" / "bench" / "kafka")
        self.bootstrap = bootstrap or f"127.0.0.1:{kafka_port}"
        self.server_url = server_url or ""
        self.database = f"token_refresh_bench_{self.run_id}"
        self.database_url = ""
        self.sandbox = Sandbox(sandbox_port or free_port(), self.workdir / "sandbox.log")
        self.latency = latency
        self.keep = keep
        self.grants: list[Grant] = []

    @property
    def token_url(self) -> str:
        return f"{self.sandbox.base_url}/{PLATFORM}/token"

    @property
    def client_credentials(self) -> tuple[str, str]:
        return default_credentials(credential_key(PLATFORM))

    def cpu_groups(self, workers: list[int]) -> dict[str, procstat.Pids]:
        """The processes a service row's CPU budget accounts for, by part."""
        kafka_dir = str(self.own_kafka.state_dir) if self.own_kafka is not None else ""

        def kafka() -> list[int]:
            return procstat.pids_where(lambda _comm, cmdline: "kafka.Kafka" in cmdline and kafka_dir in cmdline)

        def sandbox() -> list[int]:
            process = self.sandbox.process
            return [process.pid] if process is not None else []

        return {
            "worker": lambda: workers,
            "postgres": lambda: procstat.pids_where(lambda comm, _cmdline: comm == "postgres"),
            "kafka": kafka,
            "sandbox": sandbox,
            "bench": lambda: [os.getpid()],
        }

    def sandbox_cpu(self) -> float:
        """CPU seconds the sandbox process has used so far."""
        process = self.sandbox.process
        return procstat.total_cpu([process.pid]) if process is not None else 0.0

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.own_kafka is not None:
            await asyncio.to_thread(self.own_kafka.start)
        if not self.server_url:
            self.server_url = await asyncio.to_thread(_local_postgres)
        self.database_url = await create_database(self.server_url, self.database)
        await asyncio.to_thread(self.sandbox.start)
        async with httpx.AsyncClient(base_url=self.sandbox.base_url, timeout=30) as admin:
            (await admin.post("/_admin/latency", json={"seconds": self.latency})).raise_for_status()

    async def make_grants(self, count: int) -> list[Grant]:
        """``count`` more grants (kept in ``self.grants``); refreshing one never spends it."""
        async with httpx.AsyncClient(base_url=self.sandbox.base_url, timeout=30) as admin:
            semaphore = asyncio.Semaphore(20)

            async def one() -> Grant:
                async with semaphore:
                    response = await admin.post("/_admin/grants", json={"platform": PLATFORM})
                response.raise_for_status()
                body = response.json()
                return Grant(body["grant_id"], body["access_token"], body["refresh_token"])

            made = await asyncio.gather(*(one() for _ in range(count)))
        self.grants.extend(made)
        return made

    async def issued_tokens(self) -> set[str]:
        """Every token the sandbox ever handed out (for the log check)."""
        async with httpx.AsyncClient(base_url=self.sandbox.base_url, timeout=60) as admin:
            issued = (await admin.get("/_admin/issued")).json()
        return set(issued["access_tokens"]) | set(issued["refresh_tokens"])

    async def stop(self) -> None:
        self.sandbox.stop()
        if self.keep:
            return
        if self.database_url:
            try:
                await drop_database(self.server_url, self.database)
            except Exception as exc:  # the run's result stands; say what is left behind
                sys.stderr.write(f"bench: database {self.database} was not dropped: {type(exc).__name__}: {exc}\n")
        if self.own_kafka is not None:
            try:
                await asyncio.to_thread(self.own_kafka.stop)
                self.own_kafka.remove()
            except Exception as exc:
                sys.stderr.write(f"bench: the broker on {self.bootstrap} was not stopped: {exc}\n")


def _local_postgres() -> str:
    """scripts/postgres_local.py start (idempotent) prints the app database's URL: the server's."""
    result = subprocess.run(  # noqa: S603 - our interpreter, our script
        [sys.executable, str(REPO / "scripts" / "postgres_local.py"), "start"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


def log_paths(workdir: Path) -> list[Path]:
    return sorted(path for path in workdir.rglob("*.log") if path.is_file())
