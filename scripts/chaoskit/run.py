"""One chaos run, start to finish: provision, load, break things, clean round, judge."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, Literal

import asyncpg  # type: ignore[import-untyped]
import httpx

from agents.batch_consumer import ingest_group_id, refresh_group_id
from schemas import ConnectionCreated
from stream_app.crypto import TokenCipher, generate_key
from stream_app.errors import DecryptionError
from stream_app.kafka_client import ensure_topics
from stream_app.settings import load_settings
from tests.support.databases import create_database, drop_database

from . import events, figures, kafka
from .figures import Connection, Evidence, StoredRow
from .infra import REPO, Kafka, Postgres, asyncpg_dsn
from .observe import DatabaseSamples, epoch, sample_database, scrape_metrics
from .processes import Sandbox, Worker
from .timeline import Plan, make_plan

PLATFORMS = ("discord", "spotify", "youtube", "discord", "spotify", "gmail", "discord", "spotify", "google_calendar")
TOPICS = ("connection.created", "token.expiring", "token.refreshed", "token.needs_reauth", "token.refresh_failed")
REVOKED_SHARE = 0.01  # grants the run revokes on purpose: their needs_reauth is true, not false


@dataclass(frozen=True)
class Options:
    connections: int
    minutes: float
    lifetime: int
    buffer: float
    down: str
    throttle: str
    keep: bool
    kafka_port: int
    postgres_port: int
    sandbox_port: int
    metrics_ports: tuple[int, int]


def say(message: str) -> None:
    print(f"chaos {datetime.now().strftime('%H:%M:%S')} {message}", flush=True)


class ChaosRun:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.run_id = uuid.uuid4().hex[:8]
        self.workdir = REPO / ".local" / "chaos" / self.run_id
        self.key = generate_key()
        self.cipher = TokenCipher(self.key)
        self.kafka = Kafka(options.kafka_port, REPO / ".local" / "chaos" / "kafka")
        self.postgres = Postgres(options.postgres_port)
        self.sandbox = Sandbox(options.sandbox_port, self.workdir / "sandbox.log")
        self.topics = {name: f"{name}.chaos-{self.run_id}" for name in TOPICS}
        self.group = f"token-refresh-chaos-{self.run_id}"
        self.database = f"token_refresh_chaos_{self.run_id}"
        self.plan: Plan = make_plan(options.minutes, options.down, options.throttle, http_timeout=5.0)
        self.workers: list[Worker] = []
        self.server_url = self.database_url = ""
        self.connections: list[Connection] = []
        self.revoked: dict[str, float] = {}
        self.happened: list[events.Happened] = []
        self.samples = DatabaseSamples()
        self.metrics: list[tuple[str, str]] = []

    # -- setup ----------------------------------------------------------------------------

    def worker_env(self, name: str, metrics_port: int) -> dict[str, str]:
        return {
            "ENCRYPTION_KEY": self.key,
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap,
            "KAFKA_APP_ID": self.group,
            **{f"TOPIC_{name.upper().replace('.', '_')}": topic for name, topic in self.topics.items()},
            **self.sandbox.service_env(),
            # Tuned for 60-second tokens: scan often, refresh half a lifetime early, notice a
            # dead worker within seconds, back off in seconds rather than minutes.
            "SCAN_INTERVAL_SECONDS": "5",
            "REFRESH_BUFFER_SECONDS": str(self.options.buffer),
            "HTTP_TIMEOUT_SECONDS": str(self.plan.http_timeout),
            "RETRY_BASE_DELAY_SECONDS": "0.5",
            "RETRY_MAX_DELAY_SECONDS": "4",
            "RATE_LIMIT_DEFAULT_WAIT_SECONDS": "5",
            "FAILURE_BACKOFF_BASE_SECONDS": "5",
            "FAILURE_BACKOFF_MAX_SECONDS": "30",
            "CIRCUIT_WINDOW_SECONDS": "30",
            "CIRCUIT_COOL_DOWN_SECONDS": "10",
            "REFRESH_LEASE_SECONDS": "15",
            "KAFKA_SESSION_TIMEOUT_SECONDS": "10",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(metrics_port),
            "LOG_LEVEL": "INFO",
            # A spool of each worker's own, as on its own machine in production; kept across its
            # restarts, so a worker killed with tokens spooled finds them when it starts again.
            "TOKEN_SPOOL_DIR": str(self.workdir / name / "spool"),
        }

    async def provision(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        say(f"run {self.run_id}: logs and evidence in {self.workdir}")
        await asyncio.to_thread(self.kafka.start)
        self.server_url = await asyncio.to_thread(self.postgres.start)
        say(f"private Kafka at {self.kafka.bootstrap}, Postgres {self.postgres.version}/chaos on :{self.postgres.port}")
        self.database_url = await create_database(self.server_url, self.database)
        names: dict[str, Any] = {f"topic_{name.replace('.', '_')}": topic for name, topic in self.topics.items()}
        await ensure_topics(
            load_settings(encryption_key=self.key, kafka_bootstrap_servers=self.kafka.bootstrap, **names)
        )
        await asyncio.to_thread(self.sandbox.start)
        for index, port in enumerate(self.options.metrics_ports, start=1):
            name = f"worker-{index}"
            self.workers.append(Worker(name, self.worker_env(name, port), self.workdir))
        for worker in self.workers:
            worker.start()
        await asyncio.gather(*(asyncio.to_thread(w.wait_ready) for w in self.workers))
        say("sandbox and 2 workers ready")

    async def connect_all(self, admin: httpx.AsyncClient) -> list[ConnectionCreated]:
        now = datetime.now(UTC)
        created = []
        for index in range(self.options.connections):
            platform = PLATFORMS[index % len(PLATFORMS)]
            response = await admin.post(
                "/_admin/grants", json={"platform": platform, "expires_in": self.options.lifetime}
            )
            response.raise_for_status()
            grant = response.json()
            event = ConnectionCreated(
                user_id=uuid.uuid4(),
                platform=platform,
                access_token=self.cipher.encrypt(grant["access_token"]),
                refresh_token=self.cipher.encrypt(grant["refresh_token"]),
                # Spread the first refreshes over a lifetime rather than all at once.
                token_expires_at=now + timedelta(seconds=random.uniform(40, 40 + self.options.lifetime)),  # noqa: S311
            )
            self.connections.append(Connection(str(event.user_id), platform, grant["grant_id"]))
            created.append(event)
        return created

    # -- the chaos phase ------------------------------------------------------------------

    async def timeline(self, phase_start: float) -> None:
        actions = {
            "kill -9 worker-1": lambda: events.kill_and_restart(self.workers[0]),
            "kill -9 worker-2": lambda: events.kill_and_restart(self.workers[1]),
            "kafka crash-restart": lambda: events.crash_kafka(self.kafka),
            "postgres restart": lambda: events.restart_postgres(self.postgres),
            "database pool exhaustion": lambda: events.exhaust_pool(asyncpg_dsn(self.database_url), self.database),
        }
        for offset, name in self.plan.events:
            await asyncio.sleep(max(0.0, phase_start + offset - time.time()))
            say(f"event: {name}")
            happened = await events.happen(name, actions[name]())
            self.happened.append(happened)
            say(f"event done: {name}: {happened.detail}")

    async def revocations(self, admin: httpx.AsyncClient, phase_start: float) -> None:
        chosen = random.sample(self.connections, max(1, int(len(self.connections) * REVOKED_SHARE)))
        moments = sorted(random.uniform(0.1, 0.9) * self.plan.phase_seconds for _ in chosen)  # noqa: S311
        for connection, offset in zip(chosen, moments, strict=True):
            await asyncio.sleep(max(0.0, phase_start + offset - time.time()))
            with contextlib.suppress(httpx.HTTPError):
                (await admin.post(f"/_admin/grants/{connection.grant_id}/revoke", json={})).raise_for_status()
                self.revoked[connection.grant_id] = time.time()

    async def clean_round(self, admin: httpx.AsyncClient) -> float:
        """All faults off; wait until every live grant was refreshed once more (bounded)."""
        (await admin.delete("/_admin/fault-rules")).raise_for_status()
        started = time.time()
        bound = 2 * self.options.lifetime + self.plan.throttle_retry_after + 60
        say(f"clean round: faults off; waiting (at most {bound:.0f}s) for every live grant to refresh again")
        while time.time() < started + bound:
            await asyncio.sleep(10)
            grants = await self.grants(admin)
            pending = [
                c
                for c in self.connections
                if c.grant_id not in self.revoked and not any(t > started for t in grants[c.grant_id]["refreshed_at"])
            ]
            say(f"clean round: {len(pending)} live connection(s) not refreshed yet")
            if not pending:
                break
        return started

    async def grants(self, admin: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
        response = await admin.get("/_admin/grants", timeout=60)
        response.raise_for_status()
        return {g["grant_id"]: g for g in response.json()["grants"]}

    async def outbox_drained(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        connection = await asyncpg.connect(asyncpg_dsn(self.database_url))
        try:
            while time.time() < deadline:
                if not await connection.fetchval("SELECT count(*) FROM outbox_events WHERE published_at IS NULL"):
                    return
                await asyncio.sleep(2)
        finally:
            await connection.close()

    # -- judging --------------------------------------------------------------------------

    async def stored(self) -> tuple[dict[tuple[str, str], StoredRow], list[tuple[str, str, bool]], list[bytes]]:
        connection = await asyncpg.connect(asyncpg_dsn(self.database_url))
        try:
            rows = await connection.fetch("SELECT * FROM platform_connections")
            outbox = await connection.fetch("SELECT event_id, topic, published_at, key, payload FROM outbox_events")
            dump = [r["t"].encode() for r in await connection.fetch("SELECT t::text AS t FROM platform_connections t")]
        finally:
            await connection.close()
        result = {}
        for row in rows:
            view = SimpleNamespace(**dict(row))
            result[(str(row["user_id"]), row["platform"])] = StoredRow(
                status=row["status"],
                access_token=self._decrypt(view, "access_token"),
                refresh_token=self._decrypt(view, "refresh_token"),
                token_expires_at=epoch(row["token_expires_at"]),
                last_refreshed_at=epoch(row["last_refreshed_at"]),
            )
        dump.extend(bytes(r["key"]) + b"\n" + bytes(r["payload"]) for r in outbox)
        return result, [(str(r["event_id"]), r["topic"], r["published_at"] is not None) for r in outbox], dump

    def _decrypt(self, row: SimpleNamespace, column: Literal["access_token", "refresh_token"]) -> str | None:
        if getattr(row, column) is None:
            return None
        try:
            return str(self.cipher.decrypt_column(row, column))
        except DecryptionError:
            return None

    async def evidence(self, admin: httpx.AsyncClient, clean_started: float, offsets: Any) -> Evidence:
        grants = await self.grants(admin)
        issued = (await admin.get("/_admin/issued", timeout=60)).json()
        rules = (await admin.get("/_admin/fault-rules")).json()["rules"]
        rows, outbox, dump = await self.stored()
        for key, row in rows.items():  # the final state counts as observed too
            if row.last_refreshed_at is not None and row.token_expires_at is not None:
                self.samples.refreshed_states.setdefault(key, set()).add(row.token_expires_at)
        names = [*self.topics.values(), *(f"{self.topics[n]}.dlq" for n in ("connection.created", "token.expiring"))]
        records = await kafka.read_all(self.kafka.bootstrap, names)
        texts: list[tuple[str, bytes]] = [("database", b"\n".join(dump))]
        texts += [(f"/metrics {url}", text.encode()) for url, text in self.metrics]
        texts += [(f"log {path.name}", path.read_bytes()) for w in self.workers for path in w.logs if path.exists()]
        pool = next((h for h in self.happened if h.name == "database pool exhaustion"), None)
        return Evidence(
            connections=self.connections,
            grants=grants,
            revoked_by_run=dict(self.revoked),
            fault_rules=rules,
            rows=rows,
            expiries=self.samples.expiries,
            refreshed_states=self.samples.refreshed_states,
            outbox=outbox,
            records=records,
            topics=self.topics,
            offsets=offsets,
            texts=texts,
            issued=set(issued["access_tokens"]) | set(issued["refresh_tokens"]),
            clean_started_at=clean_started,
            excused=figures.excused_windows(rules, (pool.started_at, pool.ended_at) if pool else None),
            kills=[h.started_at for h in self.happened if h.name.startswith("kill -9")],
            call_deadline=self.plan.http_timeout,
        )

    # -- the whole run --------------------------------------------------------------------

    async def run(self) -> list[figures.Figure]:
        await self.provision()
        async with httpx.AsyncClient(base_url=self.sandbox.base_url, timeout=30) as admin:
            created = await self.connect_all(admin)
            for rule in self.plan.fault_rules():
                (await admin.post("/_admin/fault-rules", json=rule)).raise_for_status()
            phase_start = time.time()
            say(f"chaos phase: {self.plan.phase_seconds / 60:.1f} min, {len(created)} connections")
            await kafka.publish(self.kafka.bootstrap, self.topics["connection.created"], created)
            stop = asyncio.Event()
            watchers = [
                asyncio.create_task(sample_database(asyncpg_dsn(self.database_url), self.samples, stop)),
                asyncio.create_task(scrape_metrics([w.metrics_url for w in self.workers], self.metrics, stop, 30)),
            ]
            revoking = asyncio.create_task(self.revocations(admin, phase_start))
            await self.timeline(phase_start)
            await asyncio.sleep(max(0.0, phase_start + self.plan.phase_seconds - time.time()))
            await revoking
            clean_started = await self.clean_round(admin)
            await self.outbox_drained()
            inputs = [self.topics["connection.created"], self.topics["token.expiring"]]
            offsets = await kafka.group_offsets(
                self.kafka.bootstrap, [ingest_group_id(self.group), refresh_group_id(self.group)], inputs, timeout=60
            )
            stop.set()
            await asyncio.gather(*watchers)
            say("stopping workers (SIGTERM)")
            for worker in self.workers:
                if not await asyncio.to_thread(worker.stop):
                    say(f"{worker.name} did not stop within 60s and was killed")
            evidence = await self.evidence(admin, clean_started, offsets)
        results = figures.compute(evidence)
        self.write_report(results, evidence)
        return results

    def notes(self, evidence: Evidence) -> list[str]:
        logs = "".join(w.log_text() for w in self.workers)
        excused = sum(
            1
            for c in evidence.connections
            for e in evidence.expiries.get(c.key, {})
            if any(figures._covers(p, c.platform) and s <= e <= t for p, s, t in evidence.excused)
        )
        refreshes = sum(len(g["refreshed_at"]) for g in evidence.grants.values())
        return [
            *(
                f"{datetime.fromtimestamp(h.started_at).strftime('%H:%M:%S')} {h.name}: {h.detail}"
                for h in self.happened
            ),
            f"sandbox: {refreshes} successful refreshes; {len(self.revoked)} grants revoked on purpose",
            f"pool checkouts that timed out (worker log lines): {logs.count('QueuePool limit')}",
            f"expiries excused by an outage/throttle/pool window: {excused}",
            f"database samples: {self.samples.samples} ({self.samples.failed_samples} failed)",
        ]

    def write_report(self, results: list[figures.Figure], evidence: Evidence) -> None:
        text = figures.table(results)
        notes = self.notes(evidence)
        print("\n" + text + "\n")
        for line in notes:
            print(f"  {line}")
        (self.workdir / "report.md").write_text(text + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
        (self.workdir / "figures.json").write_text(json.dumps([asdict(r) for r in results], indent=1))

    async def cleanup(self) -> None:
        for worker in self.workers:
            worker.stop(timeout=10)
        self.sandbox.stop()
        if self.options.keep:
            say(f"kept: database {self.database}, Kafka state, Postgres cluster {self.postgres.version}/chaos")
            return
        with contextlib.suppress(Exception):
            await drop_database(self.server_url, self.database)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.kafka.stop)
            self.kafka.remove()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.postgres.drop)
