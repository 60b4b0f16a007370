"""`token-refresh connect` against the real broker: the event it publishes validates, its tokens
are ciphertexts only the service's key opens (bound to the user, platform and field), it is signed
when producer keys are configured, and the worker's own checks accept it. No worker involved."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from click.testing import CliRunner

from schemas import ConnectionCreated
from stream_app.cli import cli
from stream_app.crypto import TokenBinding, TokenCipher
from stream_app.ingest import InvalidEvent, bound_tokens, parse_event
from stream_app.provenance import Provenance
from stream_app.settings import load_settings
from tests.support.infra import free_port
from tests.support.kafka import create_topics

pytestmark = pytest.mark.kafka

ACCESS = "live-access-" + uuid.uuid4().hex
REFRESH = "live-refresh-" + uuid.uuid4().hex


@pytest.fixture
async def topic(kafka_bootstrap: str) -> str:
    name = f"connections.{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_bootstrap, [name], partitions=2)
    return name


@pytest.fixture
def env(kafka_bootstrap: str, encryption_key: str, topic: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "ENCRYPTION_KEY": encryption_key,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TOPIC_CONNECTION_CREATED": topic,
    }


def connect(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_app", "connect", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def published(bootstrap: str, topic: str, count: int = 1) -> list[ConsumerRecord]:
    """The topic's first ``count`` records (polled until there, at most 30 s)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: list[ConsumerRecord] = []
    try:
        async with asyncio.timeout(30):
            while len(found) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found.extend(records)
    finally:
        await consumer.stop()
    return found


def accepted(record: ConsumerRecord, settings_env: dict[str, Any]) -> ConnectionCreated:
    """What the worker does with the record before storing it: parse, provenance, tokens opened."""
    settings = load_settings(**settings_env)
    event = parse_event(ConnectionCreated, record.value)
    Provenance(settings).check_connection(event, SimpleNamespace(value=record.value, message=record))  # type: ignore[arg-type]
    bound_tokens(TokenCipher.from_settings(settings), event)
    return event


async def test_connect_publishes_a_sealed_signed_event_the_worker_accepts(
    env: dict[str, str], topic: str, kafka_bootstrap: str, encryption_key: str
) -> None:
    user_id = uuid.uuid4()
    signing = f"cli-{uuid.uuid4().hex[:6]}:{secrets.token_hex(32)}"
    before = datetime.now(UTC)
    result = connect(
        str(user_id).upper(),
        "spotify",
        "--expires-in",
        "3600",
        "--scope",
        "user-read-email",
        "--scope",
        "playlist-read-private",
        env=env | {"PRODUCER_SIGNING_KEYS": signing, "REQUIRE_SIGNED_CONNECTION_EVENTS": "true"},
        stdin=f"{ACCESS}\n{REFRESH}\n",
    )
    assert result.returncode == 0, result.stderr
    (record,) = await published(kafka_bootstrap, topic)
    assert ACCESS not in result.stdout + result.stderr and REFRESH not in result.stdout + result.stderr
    assert ACCESS.encode() not in record.value and REFRESH.encode() not in record.value

    verifier = {"encryption_key": encryption_key, "producer_signing_keys": signing}
    event = accepted(record, verifier | {"require_signed_connection_events": True, "require_bound_input_tokens": True})
    assert record.key == f"{user_id}:spotify".encode()
    assert (event.user_id, event.platform, event.scopes) == (
        user_id,
        "spotify",
        ["user-read-email", "playlist-read-private"],
    )
    assert event.token_expires_at is not None
    assert timedelta(seconds=3599) <= event.token_expires_at - before <= timedelta(seconds=3600 + 30)
    assert event.access_token.startswith("v2:") and event.refresh_token is not None
    cipher = TokenCipher(encryption_key)
    assert cipher.decrypt(event.access_token, TokenBinding(user_id, "spotify", "access_token")) == ACCESS
    assert cipher.decrypt(event.refresh_token, TokenBinding(user_id, "spotify", "refresh_token")) == REFRESH
    key_id = signing.split(":")[0]
    assert result.stdout == (
        f"published connection.created {event.event_id} for {user_id}:spotify at {topic}[{record.partition}]@0, "
        f"signed with key id {key_id}\n"
    )
    # The signature is real: under another secret for the same key id, the worker refuses it.
    with pytest.raises(InvalidEvent, match="does not match"):
        accepted(record, verifier | {"producer_signing_keys": f"{key_id}:{secrets.token_hex(32)}"})


async def test_tokens_from_the_environment_or_a_hidden_prompt(
    env: dict[str, str], topic: str, kafka_bootstrap: str, encryption_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_env = connect(
        str(uuid.uuid4()), "github", "--tokens-from", "env", "--no-refresh-token",
        env=env | {"CONNECT_ACCESS_TOKEN": ACCESS, "CONNECT_REFRESH_TOKEN": REFRESH},
    )  # fmt: skip
    assert from_env.returncode == 0, from_env.stderr
    assert from_env.stdout.endswith(", unsigned\n")

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    prompted = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["connect", str(uuid.uuid4()), "discord", "--tokens-from", "prompt"],
        input=f"{ACCESS}\n{REFRESH}\n",
    )
    assert prompted.exit_code == 0, prompted.output
    assert prompted.stderr == "Access token:Refresh token:"  # asked on stderr; what is typed is not echoed
    assert ACCESS not in prompted.output and REFRESH not in prompted.output

    records = await published(kafka_bootstrap, topic, 2)
    events = sorted(
        (accepted(record, {"encryption_key": encryption_key}) for record in records), key=lambda e: e.platform
    )
    discord, github = events
    assert (github.platform, discord.platform) == ("github", "discord")
    assert github.refresh_token is None and github.token_expires_at is None and github.scopes is None
    cipher = TokenCipher(encryption_key)
    assert cipher.decrypt(github.access_token, TokenBinding(github.user_id, "github", "access_token")) == ACCESS
    assert discord.refresh_token is not None
    assert cipher.decrypt(discord.refresh_token, TokenBinding(discord.user_id, "discord", "refresh_token")) == REFRESH


@pytest.mark.parametrize(
    ("args", "stdin", "named"),
    [
        (["not-a-uuid", "spotify"], f"{ACCESS}\n{REFRESH}\n", "USER_ID"),
        ([str(uuid.uuid4()), "spotfy"], f"{ACCESS}\n{REFRESH}\n", "PLATFORM"),
        ([str(uuid.uuid4()), "spotify"], f"{ACCESS}\n", "no refresh token"),
        ([str(uuid.uuid4()), "spotify"], "", "no access token"),
        ([str(uuid.uuid4()), "spotify", "--signing-key-id", "nope"], f"{ACCESS}\n{REFRESH}\n", "--signing-key-id"),
        (
            [str(uuid.uuid4()), "spotify", "--scope", "a\tb"],
            f"{ACCESS}\n{REFRESH}\n",
            "scopes: control character U+0009",
        ),
    ],
    ids=["user", "platform", "refresh token", "access token", "signing key", "scope"],
)
def test_refusals_are_one_line_and_quote_no_token(args: list[str], stdin: str, named: str, env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["connect", *args], input=stdin, env=env)
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and named in result.stderr, result.stderr
    assert ACCESS not in result.output and REFRESH not in result.output


def test_broker_down_is_one_line_and_exit_1(env: dict[str, str]) -> None:
    nothing_listens = f"127.0.0.1:{free_port()}"
    result = connect(
        str(uuid.uuid4()),
        "spotify",
        env=env | {"KAFKA_BOOTSTRAP_SERVERS": nothing_listens},
        stdin=f"{ACCESS}\n{REFRESH}\n",
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"token-refresh: publishing to '{env['TOPIC_CONNECTION_CREATED']}': cannot reach a Kafka broker at "
        f"{nothing_listens} (KAFKA_BOOTSTRAP_SERVERS)"
    ]


def test_no_option_takes_a_token_on_the_command_line() -> None:
    """Arguments are visible to every user through ps: only stdin, a prompt or the environment."""
    command = cli.commands["connect"]
    assert not [
        p for p in command.params if "token" in (p.name or "") and p.name not in ("tokens_from", "no_refresh_token")
    ]
