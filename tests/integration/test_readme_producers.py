"""The README's producer snippets, run as documented against the real broker: the Python one with
aiokafka, the Node one with kafkajs (installed from the npm registry into a cache once). What
they publish is what the service accepts: a valid `connection.created` under its key, signed
under a producer key, tokens bound to the row and readable with ENCRYPTION_KEY."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas import ConnectionCreated
from stream_app.crypto import TokenCipher
from stream_app.ingest import bound_tokens, parse_event
from stream_app.provenance import Provenance
from stream_app.settings import load_settings
from tests.support.kafka import create_topics
from tests.support.node_snippets import snippet

pytestmark = pytest.mark.kafka

README = Path(__file__).resolve().parents[2] / "README.md"
NODE_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "token-refresh" / "node-kafkajs"
KAFKAJS = "kafkajs@2.2.4"
SIGNING_KEY = ("producer-1", uuid.uuid4().hex + uuid.uuid4().hex)


@pytest.fixture
async def topic(kafka_bootstrap: str) -> str:
    name = f"connection.created.readme.{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_bootstrap, [name], partitions=1)
    return name


async def _only_record(bootstrap: str, topic: str) -> Any:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=10_000)
        records = [record for batch in batches.values() for record in batch]
    finally:
        await consumer.stop()
    assert len(records) == 1
    return records[0]


def _accepted(record: Any, encryption_key: str, user_id: uuid.UUID) -> dict[str, str | None]:
    """What the worker's ingest would check, with signatures and bound tokens required."""
    settings = load_settings(
        encryption_key=encryption_key,
        producer_signing_keys=f"{SIGNING_KEY[0]}:{SIGNING_KEY[1]}",
        require_signed_connection_events=True,
        require_bound_input_tokens=True,
    )
    event = parse_event(ConnectionCreated, record.value)
    Provenance(settings).check_connection(event, SimpleNamespace(message=record, value=record.value))  # type: ignore[arg-type]
    assert record.key == f"{user_id}:spotify".encode() == event.key.encode()
    assert event.user_id == user_id and event.scopes == ["user-read-email"]
    cipher = TokenCipher(encryption_key)
    sealed = bound_tokens(cipher, event)
    return {
        field: cipher.decrypt_column(SimpleNamespace(user_id=user_id, platform="spotify", **sealed), field)
        for field in ("access_token", "refresh_token")
    }


async def test_the_python_snippet_publishes_what_the_service_accepts(
    kafka_bootstrap: str, topic: str, encryption_key: str
) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(snippet("produce-python", README, "python"), "README.md", "exec"), namespace)  # noqa: S102
    user_id = uuid.uuid4()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await namespace["publish_connection"](
            producer,
            topic,
            encryption_key,
            user_id,
            "spotify",
            "BQD-access",
            "AQD-refresh",
            3600,
            ["user-read-email"],
            SIGNING_KEY,
        )
    finally:
        await producer.stop()

    tokens = _accepted(await _only_record(kafka_bootstrap, topic), encryption_key, user_id)
    assert tokens == {"access_token": "BQD-access", "refresh_token": "AQD-refresh"}


def _kafkajs() -> Path:
    """kafkajs, installed once into the cache (the npm registry is reachable; no CDN is needed)."""
    modules = NODE_CACHE / "node_modules"
    if not (modules / "kafkajs").is_dir():
        npm = shutil.which("npm")
        assert npm is not None, "npm is not installed"
        NODE_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(NODE_CACHE), KAFKAJS],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return modules


async def test_the_node_snippet_publishes_what_the_service_accepts(
    kafka_bootstrap: str, topic: str, encryption_key: str
) -> None:
    node = shutil.which("node")
    assert node is not None, "node is not installed"
    modules = _kafkajs()
    user_id = uuid.uuid4()
    script = "\n".join(
        [
            "const crypto = require('node:crypto');",
            *(
                snippet(name).replace("const crypto = require('node:crypto');", "")
                for name in ("sign-event", "encrypt-bound-token")
            ),
            snippet("produce-node", README),
            "const input = JSON.parse(process.argv[1]);",
            "(async () => {",
            "  const kafka = new Kafka({ clientId: 'readme-test', brokers: [input.bootstrap], logLevel: 1 });",
            "  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });",
            "  await producer.connect();",
            "  const id = await publishConnection(producer, input.topic, input.key, input.user, 'spotify',",
            "    'BQD-access', 'AQD-refresh', 3600, ['user-read-email'], { id: input.keyId, secret: input.secret });",
            "  await producer.disconnect();",
            "  console.log(JSON.stringify({ id }));",
            "})().catch((error) => { console.error(error.message); process.exit(1); });",
        ]
    )
    argument = {
        "bootstrap": kafka_bootstrap,
        "topic": topic,
        "key": encryption_key,
        "user": str(user_id),
        "keyId": SIGNING_KEY[0],
        "secret": SIGNING_KEY[1],
    }
    completed = subprocess.run(
        [node, "-e", script, json.dumps(argument)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NODE_PATH": str(modules)},
    )
    assert completed.returncode == 0, completed.stderr

    record = await _only_record(kafka_bootstrap, topic)
    assert json.loads(record.value)["event_id"] == json.loads(completed.stdout)["id"]
    tokens = _accepted(record, encryption_key, user_id)
    assert tokens == {"access_token": "BQD-access", "refresh_token": "AQD-refresh"}


def test_the_readme_example_event_is_a_valid_connection_created() -> None:
    text = README.read_text()
    start = text.index("## Producing `connection.created`")
    example = text[
        text.index("```json\n", start) + len("```json\n") : text.index("```", text.index("```json\n", start) + 7)
    ]
    event = parse_event(ConnectionCreated, example.encode())
    assert event.key == "6f1c0f3e-8d2a-4a57-9a39-1f6f0c8e2b11:spotify"
    assert event.access_token is not None and event.access_token.startswith("v2:")
