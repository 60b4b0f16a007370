"""The Kafka ACLs of docs/security.md, applied by scripts/kafka_acls.py to a broker that
authenticates every client (SASL/PLAIN) and denies whatever no ACL allows: a real worker and a
real notifier run on exactly those, and each other role is held to its own topics."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError
from standardwebhooks.webhooks import Webhook

from schemas import ConnectionCreated
from schemas.events import ConnectionDisconnected
from stream_app.crypto import TokenCipher
from stream_app.sandbox import SandboxServer
from tests.support.acl_broker import REPO, AclBroker
from tests.support.infra import free_port
from tests.support.notify_receivers import HttpReceiver, Request
from tests.support.worker import WorkerFailed, WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

DEFAULT_TOPICS = (
    "connection.created",
    "token.expiring",
    "token.refreshed",
    "token.needs_reauth",
    "token.refresh_failed",
    "connection.disconnected",
    "token.revoked",
    "provider.circuit_changed",
)
NOTIFIER_GROUP = "notifier"
READ_TIMEOUT_MS = 3000
REFRESH_BUFFER_SECONDS = 300


@dataclass
class Deployment:
    broker: AclBroker
    app_id: str
    topics: dict[str, str]
    worker: WorkerProcess
    worker_env: dict[str, str]
    notify_dlq: str


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclBroker]:
    users = ["worker", "producer", "trigger", "notify", "notifier", "operator"]
    broker = AclBroker(tmp_path_factory.mktemp("acl-broker"), users)
    try:
        broker.start()  # a broker that does not start fails the tests: never a skip
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def deployment(
    acl_broker: AclBroker,
    module_database_url: str,
    sandbox: SandboxServer,
    encryption_key: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    suffix = uuid.uuid4().hex[:8]
    app_id = f"token-refresh-acl-{suffix}"
    topics = {name: f"{name}.{suffix}" for name in DEFAULT_TOPICS}
    topic_flags = [f"--topic-{name.replace('.', '-').replace('_', '-')}={topic}" for name, topic in topics.items()]
    notify_dlq = f"notify.dlq.{suffix}"
    _kafka_acls(
        "apply",
        f"--bootstrap-server={acl_broker.bootstrap}",
        f"--command-config={acl_broker.admin_properties}",
        f"--app-id={app_id}",
        *topic_flags,
        "--worker=User:worker",
        "--producer=User:producer",
        "--trigger=User:trigger",
        "--notify=User:notify",
        f"--notify-dlq-topic={notify_dlq}",
        "--notifier=User:notifier",
        f"--notifier-group={NOTIFIER_GROUP}",
        "--operator=User:operator",
    )
    env = {
        "ENCRYPTION_KEY": encryption_key,
        # Its own database: on the shared one the relay met other tests' unpublished events for
        # the default topic names, which this worker may not write, and stalled behind them.
        "DATABASE_URL": module_database_url,
        "KAFKA_APP_ID": app_id,
        "SCAN_INTERVAL_SECONDS": "2",
        "REFRESH_BUFFER_SECONDS": str(REFRESH_BUFFER_SECONDS),
        "KAFKA_SESSION_TIMEOUT_SECONDS": "6",
        "LOG_LEVEL": "INFO",
        **acl_broker.service_env("worker"),
        **{f"TOPIC_{name.upper().replace('.', '_')}": topic for name, topic in topics.items()},
        **sandbox.service_env(),
    }
    workdir = tmp_path_factory.mktemp("acl-worker")
    env["TOKEN_SPOOL_DIR"] = str(workdir / "spool")
    # The topics do not exist yet: the worker creates them (its Create ACLs) before it is Ready.
    worker = WorkerProcess(env, workdir / "worker.log").start()
    try:
        worker.wait_ready(timeout=120)
        yield Deployment(acl_broker, app_id, topics, worker, env, notify_dlq)
    finally:
        worker.stop()


def _kafka_acls(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "kafka_acls.py"), *args], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


async def _send(options: dict[str, Any], topic: str, value: bytes, key: bytes = b"key") -> None:
    producer = AIOKafkaProducer(acks="all", **options)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def _read(options: dict[str, Any], topic: str, group: str | None) -> int:
    """Records read from the beginning of ``topic`` within a few seconds (raises when refused)."""
    consumer = AIOKafkaConsumer(
        topic, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False, **options
    )
    try:
        await consumer.start()
        batches = await consumer.getmany(timeout_ms=READ_TIMEOUT_MS)
        return sum(len(records) for records in batches.values())
    finally:
        await consumer.stop()


async def _outcome_for(options: dict[str, Any], topics: list[str], user_id: uuid.UUID) -> bytes:
    """The first outcome record about ``user_id``, read in the notifier's own group."""
    consumer = AIOKafkaConsumer(
        *topics, group_id=NOTIFIER_GROUP, auto_offset_reset="earliest", enable_auto_commit=False, **options
    )
    await consumer.start()
    try:
        async with asyncio.timeout(60):
            async for record in consumer:
                if str(user_id).encode() in (record.value or b""):
                    return bytes(record.value)
    finally:
        await consumer.stop()
    raise AssertionError("unreachable")


async def _connect(deployment: Deployment, sandbox: SandboxServer, key: str, expires_in: timedelta) -> bytes:
    """A connection published by the producer principal; its outcome as the notifier reads it."""
    cipher = TokenCipher(key)
    grant = sandbox.create_grant("spotify")
    event = ConnectionCreated(
        user_id=uuid.uuid4(),
        platform="spotify",
        access_token=cipher.encrypt(grant["live_access_token"]),
        refresh_token=cipher.encrypt(grant["live_refresh_token"]),
        token_expires_at=datetime.now(UTC) + expires_in,
    )
    broker, topics = deployment.broker, deployment.topics
    await _send(broker.client_options("producer"), topics["connection.created"], event.to_bytes(), event.key.encode())
    outcomes = [topics[name] for name in ("token.refreshed", "token.needs_reauth", "token.refresh_failed")]
    return await _outcome_for(broker.client_options("notifier"), outcomes, event.user_id)


def _refreshed(outcome: bytes) -> bool:
    return bool(json.loads(outcome)["event_type"] == "token.refreshed")


async def test_worker_ingests_and_refreshes_with_only_its_acls(
    deployment: Deployment, sandbox: SandboxServer, encryption_key: str
) -> None:
    """Due at once: the ingest requests the refresh itself (token.expiring), the refresh publishes."""
    outcome = await _connect(deployment, sandbox, encryption_key, timedelta(minutes=2))
    assert _refreshed(outcome), outcome
    log = deployment.worker.log()
    assert "AuthorizationFailed" not in log, log[-4000:]


async def test_worker_is_elected_leader_and_scans(
    deployment: Deployment, sandbox: SandboxServer, encryption_key: str
) -> None:
    """Due only in a few seconds: only the expiry scan requests it, and only the leader scans; a
    worker that may not describe `<app>-__assignor-__leader` is never leader and never scans."""
    expires_in = timedelta(seconds=REFRESH_BUFFER_SECONDS + 8)  # due 8 s from now; scans every 2 s
    outcome = await _connect(deployment, sandbox, encryption_key, expires_in)
    assert _refreshed(outcome), outcome


async def test_worker_applies_a_disconnect_with_only_its_acls(deployment: Deployment) -> None:
    """The producer's disconnect is read (group <app>-disconnect) and its outcome written."""
    event = ConnectionDisconnected(user_id=uuid.uuid4(), platform="spotify")
    broker, topics = deployment.broker, deployment.topics
    await _send(
        broker.client_options("producer"), topics["connection.disconnected"], event.to_bytes(), event.key.encode()
    )
    outcome = await _outcome_for(broker.client_options("notifier"), [topics["token.revoked"]], event.user_id)
    assert json.loads(outcome)["disconnect_event_id"] == str(event.event_id)
    assert "AuthorizationFailed" not in deployment.worker.log()


async def test_producer_writes_connection_events_and_nothing_else(deployment: Deployment) -> None:
    producer, topics = deployment.broker.client_options("producer"), deployment.topics
    await _send(producer, topics["connection.created"], b"{}")  # allowed (dead-lettered by the worker)
    await _send(producer, topics["connection.disconnected"], b"{}")  # allowed (dead-lettered by the worker)
    with pytest.raises(TopicAuthorizationFailedError):
        await _send(producer, topics["token.refreshed"], b"{}")
    with pytest.raises(TopicAuthorizationFailedError):
        await _send(producer, topics["token.expiring"], b"{}")
    for topic in [*topics.values(), f"{topics['connection.created']}.dlq"]:
        with pytest.raises(TopicAuthorizationFailedError):
            await _read(producer, topic, None)


async def test_trigger_writes_token_expiring_and_nothing_else(deployment: Deployment) -> None:
    trigger, topics = deployment.broker.client_options("trigger"), deployment.topics
    await _send(trigger, topics["token.expiring"], b"{}")  # allowed (dead-lettered by the worker)
    with pytest.raises(TopicAuthorizationFailedError):
        await _send(trigger, topics["connection.created"], b"{}")
    with pytest.raises(TopicAuthorizationFailedError):
        await _read(trigger, topics["token.expiring"], None)


async def test_notifier_reads_outcomes_and_writes_nothing(deployment: Deployment) -> None:
    notifier, topics = deployment.broker.client_options("notifier"), deployment.topics
    assert await _read(notifier, topics["token.needs_reauth"], NOTIFIER_GROUP) >= 0  # not refused
    with pytest.raises(TopicAuthorizationFailedError):
        await _send(notifier, topics["token.needs_reauth"], b"{}")
    with pytest.raises(TopicAuthorizationFailedError):
        await _read(notifier, topics["connection.created"], NOTIFIER_GROUP)
    with pytest.raises(GroupAuthorizationFailedError):
        await _read(notifier, topics["token.needs_reauth"], deployment.app_id)


WEBHOOK_SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def _notify_env(deployment: Deployment, user: str, receiver: HttpReceiver, dead_letters: str) -> dict[str, str]:
    """`token-refresh notify` authenticated as ``user``, its webhook channel aimed at ``receiver``;
    no ENCRYPTION_KEY (the conftest keeps it out of the environment), as in production."""
    return {
        "DATABASE_URL": deployment.worker_env["DATABASE_URL"],
        "KAFKA_APP_ID": deployment.app_id,
        "KAFKA_SESSION_TIMEOUT_SECONDS": "6",
        "LOG_LEVEL": "INFO",
        **deployment.broker.service_env(user),
        **{f"TOPIC_{name.upper().replace('.', '_')}": topic for name, topic in deployment.topics.items()},
        "NOTIFY_DLQ_TOPIC": dead_letters,
        "NOTIFY_HTTP_HOST": "127.0.0.1",
        "NOTIFY_HTTP_PORT": str(free_port()),
        "NOTIFY_WEBHOOK_URL": f"{receiver.url}/hooks",
        "NOTIFY_WEBHOOK_ALLOW_HTTP": "true",
        "NOTIFY_WEBHOOK_SECRETS": WEBHOOK_SECRET,
    }


async def _webhook_about(receiver: HttpReceiver, user_id: uuid.UUID, event_type: str) -> Request:
    async with asyncio.timeout(60):
        while True:
            for request in receiver.received("/hooks"):
                body = json.loads(request.body)
                if body["type"] == event_type and body["data"]["user_id"] == str(user_id):
                    return request
            await asyncio.sleep(0.1)


async def _dead_letter_with_key(options: dict[str, Any], topic: str, key: str) -> bytes:
    consumer = AIOKafkaConsumer(topic, auto_offset_reset="earliest", enable_auto_commit=False, **options)
    await consumer.start()
    try:
        async with asyncio.timeout(60):
            async for record in consumer:
                if json.loads(record.value or b"{}").get("key") == key:
                    return bytes(record.value or b"")
    finally:
        await consumer.stop()
    raise AssertionError("unreachable")


async def test_notify_delivers_with_only_its_acls(
    deployment: Deployment, sandbox: SandboxServer, encryption_key: str, tmp_path: Path
) -> None:
    """`token-refresh notify` as its own principal (--notify) creates its dead-letter topic, reads
    the outcomes and connection.created in <app>-notify, dead-letters a record it cannot read, and
    delivers a refresh's outcome as a signed webhook."""
    broker, topics = deployment.broker, deployment.topics
    producer = broker.client_options("producer")
    cipher = TokenCipher(encryption_key)
    grant = sandbox.create_grant("spotify")
    event = ConnectionCreated(
        user_id=uuid.uuid4(),
        platform="spotify",
        access_token=cipher.encrypt(grant["live_access_token"]),
        refresh_token=cipher.encrypt(grant["live_refresh_token"]),
        token_expires_at=datetime.now(UTC) + timedelta(minutes=2),
    )
    unreadable_key = f"{uuid.uuid4()}:spotify"
    with HttpReceiver() as receiver:
        env = _notify_env(deployment, "notify", receiver, deployment.notify_dlq)
        notifier = WorkerProcess(env, tmp_path / "notify.log", command="notify").start()
        try:
            notifier.wait_until_logged("notify: running", timeout=60)
            await _send(producer, topics["connection.created"], b"not json", unreadable_key.encode())
            await _send(producer, topics["connection.created"], event.to_bytes(), event.key.encode())
            try:
                request = await _webhook_about(receiver, event.user_id, "token.refreshed")
                letter = await _dead_letter_with_key(
                    broker.client_options("admin"), deployment.notify_dlq, unreadable_key
                )
            except TimeoutError:
                sent = [json.loads(r.body)["type"] for r in receiver.requests]
                worker_log = deployment.worker.log()[-3000:]
                raise AssertionError(f"webhooks {sent}\n{notifier.log()[-3000:]}\nworker:\n{worker_log}") from None
        finally:
            stopped = notifier.stop()
        told = "\n".join(f"{r.headers}\n{r.body.decode()}" for r in receiver.requests)
    assert Webhook(WEBHOOK_SECRET).verify(request.body, request.headers)["data"]["platform"] == "spotify"
    assert json.loads(letter)["topic"] == topics["connection.created"] and b"not json" not in letter
    log = notifier.log()
    assert stopped and notifier.process is not None and notifier.process.returncode == 0, log[-4000:]
    assert "AuthorizationFailed" not in log, log[-4000:]
    for token in (grant["live_access_token"], grant["live_refresh_token"]):
        assert token not in told and token not in log


async def test_notify_as_an_outside_notifier_is_refused_at_start(deployment: Deployment, tmp_path: Path) -> None:
    """The outside teams' role (--notifier: the outcomes, in its own group) is not the notifier's:
    `token-refresh notify` under it stops at start, in one line."""
    with HttpReceiver() as receiver:
        env = _notify_env(deployment, "notifier", receiver, f"{deployment.notify_dlq}.other")
        notifier = WorkerProcess(env, tmp_path / "notify.log", command="notify").start()
        try:
            with pytest.raises(WorkerFailed, match="exited with"):
                notifier.wait_until_logged("notify: running", timeout=60)
        finally:
            notifier.kill()
    assert "NOTIFY_DLQ_TOPIC: the cluster refused to create" in notifier.log()


async def test_notify_without_read_grants_stops_in_one_line(deployment: Deployment, tmp_path: Path) -> None:
    """A principal that may write the notifier's dead-letter topic (here the producer's, aimed at a
    topic it may write) but read nothing: the refusal is one line naming the ACLs, not a traceback."""
    with HttpReceiver() as receiver:
        env = _notify_env(deployment, "producer", receiver, deployment.topics["connection.created"])
        notifier = WorkerProcess(env, tmp_path / "notify.log", command="notify").start()
        try:
            with pytest.raises(WorkerFailed, match="exited with"):
                notifier.wait_until_logged("notify: running", timeout=60)
        finally:
            notifier.kill()
    log = notifier.log()
    assert "KAFKA_SASL_USERNAME: the broker refused the notifier's principal" in log, log[-3000:]
    assert "scripts/kafka_acls.py --notify" in log and "Traceback" not in log


async def test_unauthenticated_client_may_do_nothing(deployment: Deployment) -> None:
    anonymous = {"bootstrap_servers": deployment.broker.plaintext_bootstrap}
    with pytest.raises(TopicAuthorizationFailedError):
        await _send(anonymous, deployment.topics["connection.created"], b"{}")


async def test_operator_replays_dead_letters(deployment: Deployment, tmp_path: Path) -> None:
    """A record the worker dead-letters, replayed by the operator principal with `dlq replay`."""
    topics, broker = deployment.topics, deployment.broker
    key = f"{uuid.uuid4()}:spotify"  # the service's own shape: `dlq show` prints only those keys
    await _send(broker.client_options("producer"), topics["connection.created"], b"not json", key.encode())
    dead_letters = f"{topics['connection.created']}.dlq"
    env = {**deployment.worker_env, **broker.service_env("operator")}
    async with asyncio.timeout(60):
        while key not in _cli(env, tmp_path, "dlq", "show", dead_letters).stdout:
            await asyncio.sleep(0.5)
    replay = _cli(env, tmp_path, "dlq", "replay", dead_letters)
    assert "not replayed 0" in replay.stderr and "replayed 0 " not in replay.stderr, replay.stderr


def _cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "stream_app", *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result
