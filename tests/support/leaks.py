"""The end-to-end leak search: a sandbox whose secrets encode differently in every scheme, a run
that meets every way a secret could come back, and a search of everything the run left behind
(the worker's log, every record of every topic it used, /metrics, the database's tables) for
every token and secret in every encoding.

Shared by tests/integration/test_no_leaks.py (Postgres) and test_no_leaks_sqlite.py (the
SQLite default).
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from secrets import token_hex
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import LargeBinary, String, Text, select

from stream_app.db import Database
from stream_app.db.models import Base
from stream_app.privacy import UserIdHasher
from stream_app.sandbox import SandboxServer
from stream_app.sandbox.dialects import PLATFORMS, credential_key
from stream_app.sandbox.echo import encodings
from stream_app.sandbox.state import ACCESS_PREFIX, ECHO_SHAPES, REFRESH_PREFIX
from stream_app.sealed_letters import UnsealError
from tests.integration.conftest import OUTCOME_TOPICS, Stack
from tests.support.dead_letters import opened, readable_forms
from tests.support.kafka import TopicReader, produce

# Client secrets that every scheme writes differently: a space, slash, equals, ampersand, plus,
# percent, colon, quote, backslash and non-ASCII (URL-encoding, JSON escaping, base64 all change
# them; a Basic header carries them form-urlencoded, RFC 6749 section 2.3.1).
SECRET_TAIL = 's\u00e9/c r=e&t+%3A:"\\x\u00fc'
# One platform per sandbox dialect, each meeting one echo shape (every shape met).
ECHOING = {
    platform: ECHO_SHAPES[n % len(ECHO_SHAPES)]
    for n, platform in enumerate(
        ("spotify", "discord", "youtube", "github_app", "x", "linkedin", "reddit", "twitch", "microsoft", "slack")
    )
}
# How many of one platform's requests a queued fault answers (its retries included).
FAULT_USES = 9


def hostile_credentials() -> dict[str, tuple[str, str]]:
    """A (client id, client secret) per sandbox credential key; both change under every encoding."""
    keys = dict.fromkeys(credential_key(p) for p in PLATFORMS)
    return {key: (f"{key} client/\u00fc", f"{n:03d}{SECRET_TAIL}{token_hex(8)}") for n, key in enumerate(keys)}


def secret_forms(secret: str, *, whole: bool = False) -> set[str]:
    """Every encoding the echoing sandbox writes back, and JSON's other escapings; ``whole``:
    without the pieces (prefixes, suffixes) of the secret."""
    forms = encodings(secret)[:7] if whole else encodings(secret)
    return {*forms, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}


def needles(sandbox: SandboxServer, *others: str) -> dict[str, str]:
    """Each encoded form of each secret the run knew, mapped to what it is (never the secret):
    every access and refresh token the sandbox issued, each client secret and ``id:secret``
    pair (a pair's whole forms only: its prefixes are the client id's, no secret), and the
    whole forms of ``others`` (keys: hex, whose 8-character pieces a hex ciphertext may hold)."""
    found: dict[str, str] = {ACCESS_PREFIX: "access token prefix", REFRESH_PREFIX: "refresh token prefix"}
    issued = sandbox.state.issued()
    for kind in ("access_tokens", "refresh_tokens"):
        for n, token in enumerate(issued[kind]):
            found |= dict.fromkeys(secret_forms(token), f"{kind[:-1]} #{n}")
    for key in dict.fromkeys(credential_key(p) for p in PLATFORMS):
        client_id, secret = sandbox.credentials(key)
        found |= dict.fromkeys(secret_forms(secret), f"{key} client secret")
        pair = f"{client_id}:{secret}"
        found |= dict.fromkeys(secret_forms(pair, whole=True), f"{key} client id:secret")
    for n, other in enumerate(others):
        found |= dict.fromkeys(secret_forms(other, whole=True), f"key #{n}")
    return found


def find(needles: dict[str, str], corpora: dict[str, list[bytes]]) -> set[tuple[str, str]]:
    """(where, what) for each needle readable in a corpus, in any case: as it is, or once JSON
    strings are unescaped and base64-decoded (so a dead letter's kept bytes count as readable)."""
    leaks = set()
    for where, blobs in corpora.items():
        text = b"\0".join(readable_forms(*blobs)).lower()  # a provider may change the case
        leaks |= {(where, what) for needle, what in needles.items() if needle.lower().encode() in text}
    return leaks


@dataclass
class Scenario:
    """Who the run connected and what it sent that only a hostile producer would."""

    users: dict[uuid.UUID, str] = field(default_factory=dict)  # user id -> its platform and what it met
    refreshed: list[uuid.UUID] = field(default_factory=list)  # the users who must end refreshed
    echo_grants: dict[str, str] = field(default_factory=dict)  # grant id -> echo shape
    poison: dict[bytes, bytes] = field(default_factory=dict)  # key -> value, plain-text tokens in it
    poison_users: list[uuid.UUID] = field(default_factory=list)
    poison_tokens: list[str] = field(default_factory=list)


async def run_scenario(stack: Stack) -> Scenario:
    """Refreshes that succeed, fail or echo, then every echo shape, plus two poison records."""
    state, seen, due = stack.sandbox.state, Scenario(), timedelta(minutes=2)

    async def connect(platform: str, met: str, grant: dict[str, Any] | None = None) -> dict[str, Any] | None:
        user_id, grant = await stack.connect(platform, expires_in=due, grant=grant)
        seen.users[user_id] = f"{platform}: {met}"
        if met in ("a refresh", "server errors"):
            seen.refreshed.append(user_id)
        return grant

    for platform in ("spotify", "discord", "x", "slack", "github_app", "microsoft"):
        await connect(platform, "a refresh")
    revoked = stack.sandbox.create_grant("spotify")
    state.revoke(revoked["grant_id"])
    await connect("spotify", "a revoked grant", revoked)
    for platform, mode in (("linkedin", "echo_token"), ("twitch", "invalid_client")):
        state.add_fault({"platform": platform, "mode": mode})
        await connect(platform, mode)
    state.add_fault({"platform": "google", "mode": "server_error", "count": 3})
    await connect("youtube", "server errors")
    await _send_poison(stack, seen)
    await _wait_for_outcomes(stack, seen)

    state.clear_faults()  # whatever a retry left unused
    for platform, shape in ECHOING.items():
        state.add_fault({"platform": platform, "mode": "echo_secrets", "shape": shape, "count": FAULT_USES})
        grant = await connect(platform, f"echo {shape}")
        assert grant is not None
        seen.echo_grants[grant["grant_id"]] = shape
    await _wait_for_outcomes(stack, seen)
    state.clear_faults()
    return seen


async def _send_poison(stack: Stack, seen: Scenario) -> None:
    """Plain-text tokens where ciphertexts belong, and in camelCase fields (a Node producer)."""
    for casing in (("access_token", "refresh_token"), ("accessToken", "refreshToken")):
        event, grant = stack.connection_event("discord", expires_in=timedelta(minutes=2))
        assert grant is not None
        raw = json.loads(event.to_bytes())
        for field_name in ("access_token", "refresh_token"):
            raw.pop(field_name, None)
        raw |= {casing[0]: grant["live_access_token"], casing[1]: grant["live_refresh_token"]}
        seen.poison[event.key.encode()] = json.dumps(raw).encode()
        seen.poison_users.append(event.user_id)
        seen.poison_tokens += [grant["live_access_token"], grant["live_refresh_token"]]
    await produce(stack.bootstrap, stack.topics["connection.created"], list(seen.poison.items()))


async def _wait_for_outcomes(stack: Stack, seen: Scenario) -> None:
    outcomes = {stack.topics[name] for name in OUTCOME_TOPICS}
    dead_letters = f"{stack.topics['connection.created']}.dlq"
    async with TopicReader(stack.bootstrap, [*outcomes, dead_letters]) as reader:
        for user_id in seen.users:
            await reader.wait_for(_naming(outcomes, "user_id", str(user_id)), timeout=90)
        for key in seen.poison:
            await reader.wait_for(_naming({dead_letters}, "key", key.decode()), timeout=60)


def _naming(topics: set[str], name: str, value: str) -> Callable[[str, dict[str, Any]], bool]:
    return lambda topic, record: topic in topics and record.get(name) == value


@dataclass
class Record:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def parts(self) -> list[bytes]:
        """Key, value, and each header's name and value."""
        named = [part for name, value in self.headers for part in (name.encode(), value)]
        return [part for part in (self.key, self.value, *named) if part]


async def run_partitions(bootstrap: str, prefixes: Iterable[str]) -> list[TopicPartition]:
    """The partitions of every topic on the broker named by one of ``prefixes`` (a run's
    topics, their dead-letter topics and the Faust app's own topics)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [name for name in await admin.list_topics() if name.startswith(tuple(prefixes))]
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    return [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]


async def read_all(bootstrap: str, partitions: list[TopicPartition]) -> list[Record]:
    """Every record of ``partitions`` from the beginning to their current end, headers included."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[Record] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records += [Record(r.topic, r.key, r.value, list(r.headers)) for r in batch]
        return records
    finally:
        await consumer.stop()


async def table_texts(database_url: str) -> dict[str, list[bytes]]:
    """Every text and binary value of every table of the service's schema, by table."""
    database = Database(database_url)
    texts: dict[str, list[bytes]] = {}
    try:
        async with database.sessions() as session:
            for table in Base.metadata.sorted_tables:
                columns = [c for c in table.columns if isinstance(c.type, String | Text | LargeBinary)]
                rows = (await session.execute(select(*columns))).all()
                texts[table.name] = [v if isinstance(v, bytes) else v.encode() for row in rows for v in row if v]
    finally:
        await database.dispose()
    return texts


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - a local test URL
        return str(response.read().decode())


@dataclass
class Audit:
    leaks: list[str]  # a secret, or a raw user id, found where it must never be
    blind_spots: list[str]  # what the search should have seen and did not: a clean result means nothing then


async def audit_run(stack: Stack, seen: Scenario) -> Audit:
    """Stops the worker (so its log is whole) and searches everything the run left behind."""
    metrics = await asyncio.to_thread(scrape, stack.metrics_url)
    await asyncio.to_thread(stack.worker.stop)
    log = stack.worker.log()
    prefixes = [*stack.topics.values(), stack.worker.env["KAFKA_APP_ID"]]
    partitions = await run_partitions(stack.bootstrap, prefixes)
    records = await read_all(stack.bootstrap, partitions)
    source = stack.topics["connection.created"]
    sent = [r for r in records if r.topic == source and r.key in seen.poison]  # the producer's, not the service's
    corpora = {"the worker's log": log.encode().splitlines(), "/metrics": [metrics.encode()]}
    for record in records:
        if record not in sent:
            corpora.setdefault(f"topic {record.topic}", []).extend(record.parts())
    tables = await table_texts(stack.database_url)
    corpora |= {f"table {name}": texts for name, texts in tables.items()}

    secrets = needles(stack.sandbox, stack.worker.env["ENCRYPTION_KEY"])
    users = seen.users | {u: f"poison record #{n}" for n, u in enumerate(seen.poison_users)}
    raw_ids = {str(u): f"the raw user id of {met!r}" for u, met in users.items()}
    raw_ids |= {u.hex: f"the raw user id (hex) of {met!r}" for u, met in users.items()}
    named = find(raw_ids, corpora)  # events and rows carry user ids: only logs and metrics may not
    found = sorted(find(secrets, corpora)) + sorted(f for f in named if f[0] in ("the worker's log", "/metrics"))
    blind = _blind_spots(stack, seen, secrets, log, metrics, records, sent, named)
    return Audit([f"{what} in {where}" for where, what in found], blind)


def _blind_spots(
    stack: Stack,
    seen: Scenario,
    secrets: dict[str, str],
    log: str,
    metrics: str,
    records: list[Record],
    sent: list[Record],
    named: set[tuple[str, str]],
) -> list[str]:
    blind = []
    # The same search finds the plain-text tokens in what the hostile producer sent, and the
    # dead letters keep those bytes (sealed): the search is not blind to a kept token.
    planted = {token: f"poison token #{n}" for n, token in enumerate(seen.poison_tokens)}
    in_sent = find(planted, {"sent": [part for record in sent for part in record.parts()]})
    if len(sent) != len(seen.poison) or len(in_sent) != len(planted) or not secrets.keys() >= planted.keys():
        blind.append("the search does not see the poison records' tokens in what was sent")
    dead_letters = [
        r for r in records if r.topic == f"{stack.topics['connection.created']}.dlq" and r.key in seen.poison
    ]
    opened_values = {_opened(r.value, stack.worker.env["ENCRYPTION_KEY"]) for r in dead_letters}
    if opened_values != set(seen.poison.values()):
        blind.append("the poison records' dead letters do not keep their values sealed")
    hasher = UserIdHasher(stack.worker.env.get("LOG_HASH_KEY") or stack.worker.env["ENCRYPTION_KEY"])
    blind += [
        f"no log line names the user of {met!r} by its hash" for u, met in seen.users.items() if hasher(u) not in log
    ]
    if "Token endpoint's own words" not in log:
        blind.append("no DEBUG line carries a token endpoint's (scrubbed) words")
    if "token_refresh_success_total" not in metrics:
        blind.append("/metrics has no refresh counter")
    # The same search finds each user's id where it belongs: in an outcome event and its outbox row.
    events = {f"topic {stack.topics[name]}" for name in OUTCOME_TOPICS}
    for met in seen.users.values():
        where = {w for w, what in named if what == f"the raw user id of {met!r}"}
        blind += [
            f"the search finds the user of {met!r} in no {place}"
            for place, at in (("event", events), ("outbox row", {"table outbox_events"}))
            if not where & at
        ]
    refreshed = b"\0".join(r.value or b"" for r in records if r.topic == stack.topics["token.refreshed"])
    blind += [
        f"the user of {seen.users[user]!r} was not refreshed"
        for user in seen.refreshed
        if str(user).encode() not in refreshed
    ]
    served = {r["grant_id"] for r in stack.sandbox.state.history() if r["outcome"] == "fault:echo_secrets"}
    blind += [
        f"echo shape {shape!r} never answered the worker" for g, shape in seen.echo_grants.items() if g not in served
    ]
    return blind


def _opened(letter: bytes | None, encryption_key: str) -> bytes | None:
    try:
        return opened(letter or b"", encryption_key)
    except (UnsealError, ValueError):
        return None
