"""`token-refresh replay` as an auditor runs it, against the real broker: each record's position,
timestamp and key with the event; the time range, filters, follow and output formats; values
that are not valid events and dead letters only redacted; one line when the broker is down."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner

from schemas import ConnectionCreated, DeadLetter, TokenRefreshed
from stream_app.cli import cli
from stream_app.crypto import TokenBinding, TokenCipher
from stream_app.privacy import UserIdHasher
from stream_app.sealed_letters import LetterSeal
from tests.support.infra import free_port
from tests.support.kafka import create_topics

pytestmark = pytest.mark.kafka

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SECRET = "plain-access-token-" + uuid.uuid4().hex  # a token that must never be printed


async def replay(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``token-refresh replay ARGS`` in this process (a thread of its own: the command runs its own
    event loop), which spares a Python start-up per call; ``run`` is the same from a shell."""
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["replay", *args], env=env)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_app", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None, datetime]]) -> None:
    """In order, each with its own timestamp (the record's CreateTime)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, when in records:
            await producer.send_and_wait(topic, value, key=key, timestamp_ms=int(when.timestamp() * 1000))
    finally:
        await producer.stop()


def refreshed(user_id: uuid.UUID, platform: str) -> TokenRefreshed:
    return TokenRefreshed(
        user_id=user_id,
        platform=platform,
        token_expires_at=T0 + timedelta(hours=1),
        expires_in=3600,
        attempts=1,
        duration_ms=12,
        refresh_token_rotated=False,
        reason="scheduled",
    )


def record(event: TokenRefreshed | ConnectionCreated, when: datetime) -> tuple[bytes, bytes, datetime]:
    return event.key.encode(), event.to_bytes(), when


def lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture
def topic() -> str:
    return f"audit.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def env(kafka_bootstrap: str, encryption_key: str) -> dict[str, str]:
    return {"ENCRYPTION_KEY": encryption_key, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}


@pytest.fixture
async def three_hours(kafka_bootstrap: str, topic: str) -> list[TokenRefreshed]:
    """A 2-partition topic with one event per hour from T0: spotify, youtube, spotify (one user each)."""
    await create_topics(kafka_bootstrap, [topic], partitions=2)
    events = [refreshed(uuid.uuid4(), platform) for platform in ("spotify", "youtube", "spotify")]
    await produce(kafka_bootstrap, topic, [record(e, T0 + timedelta(hours=n)) for n, e in enumerate(events)])
    return events


async def test_each_line_carries_position_timestamp_key_and_the_event(
    three_hours: list[TokenRefreshed], topic: str, env: dict[str, str]
) -> None:
    result = run("replay", topic, "--since", "beginning", env=env)
    printed = lines(result)
    assert result.stderr == "3 record(s)\n"
    by_event = {line["value"]["event_id"]: line for line in printed}
    for hour, event in enumerate(three_hours):
        line = by_event[str(event.event_id)]
        assert set(line) == {"topic", "partition", "offset", "timestamp", "key", "value"}
        assert line["topic"] == topic and line["partition"] in (0, 1) and line["offset"] >= 0
        assert line["timestamp"] == (T0 + timedelta(hours=hour)).isoformat(timespec="milliseconds")[:-6] + "Z"
        assert line["key"] == event.key
        assert line["value"] == json.loads(event.to_bytes())
    # partition by partition, in offset order
    positions = [(line["partition"], line["offset"]) for line in printed]
    assert positions == sorted(positions)


async def test_since_and_until_bound_the_range_by_record_timestamp(
    three_hours: list[TokenRefreshed], topic: str, env: dict[str, str]
) -> None:
    async def ids(*args: str) -> list[str]:
        return [line["value"]["event_id"] for line in lines(await replay(topic, *args, env=env))]

    first, second, third = (str(event.event_id) for event in three_hours)
    hour = T0 + timedelta(hours=1)
    assert await ids("--since", hour.isoformat(), "--until", hour.isoformat()) == [second]
    assert await ids("--since", "beginning", "--until", "2026-01-01T00:30:00Z") == [first]
    assert sorted(await ids("--since", "2026-01-01T00:30:00+00:00")) == sorted([second, third])
    assert await ids("--since", "2999-01-01T00:00:00Z") == []


async def test_platform_and_user_filter_on_the_events_fields(
    three_hours: list[TokenRefreshed], topic: str, env: dict[str, str], encryption_key: str
) -> None:
    async def ids(*args: str) -> list[str]:
        result = await replay(topic, "--since", "beginning", *args, env=env)
        return sorted(line["value"]["event_id"] for line in lines(result))

    first, second, third = three_hours
    assert await ids("--platform", "spotify") == sorted([str(first.event_id), str(third.event_id)])
    assert await ids("--platform", "discord") == []
    # any spelling of the UUID, or the hash that stands for the user in the logs
    assert await ids("--user", first.user_id.hex.upper()) == [str(first.event_id)]
    assert await ids("--user", UserIdHasher(encryption_key)(second.user_id)) == [str(second.event_id)]
    assert await ids("--user", str(first.user_id), "--platform", "youtube") == []
    refused = await replay(topic, "--since", "beginning", "--user", "someone", env=env)
    assert refused.returncode == 2 and "--user" in refused.stderr


async def test_values_that_are_not_valid_events_are_shown_redacted(
    kafka_bootstrap: str, topic: str, env: dict[str, str], encryption_key: str
) -> None:
    await create_topics(kafka_bootstrap, [topic], partitions=1)
    user_id = uuid.uuid4()
    plain = {
        "event_type": "connection.created",
        "user_id": str(user_id),
        "platform": "spotify",
        "access_token": SECRET,  # a producer's bug: not encrypted
        "refresh_token": None,
        "token_expires_at": None,
    }
    cipher = TokenCipher(encryption_key)
    valid = ConnectionCreated(
        user_id=user_id,
        platform="spotify",
        access_token=cipher.encrypt(SECRET, TokenBinding(user_id, "spotify", "access_token")),
        refresh_token=None,
        token_expires_at=None,
    )
    extra = json.loads(valid.to_bytes()) | {"debug_token": SECRET}  # valid, with a field outside the schema
    records: list[tuple[bytes | None, bytes | None, datetime]] = [
        (valid.key.encode(), json.dumps(plain).encode(), T0),
        (valid.key.encode(), SECRET.encode() + b"\xff\x1b[31m", T0),  # not JSON, not even UTF-8
        (SECRET.encode(), valid.to_bytes(), T0),  # a token in the key
        (valid.key.encode(), json.dumps(extra).encode(), T0),
        (valid.key.encode(), None, T0),
    ]
    await produce(kafka_bootstrap, topic, records)

    for output in ("jsonl", "table"):
        result = await replay(topic, "--since", "beginning", "--format", output, env=env)
        assert result.returncode == 0, result.stderr
        assert SECRET not in result.stdout + result.stderr and "\x1b" not in result.stdout
    plain_line, not_json, token_key, with_extra, empty = lines(await replay(topic, "--since", "beginning", env=env))
    assert (
        plain_line["value"] is None and plain_line["problem"] == "not a valid connection.created event (access_token)"
    )
    assert '"access_token": "<' in plain_line["redacted"] and '"platform": "spotify"' in plain_line["redacted"]
    assert not_json["redacted"] == f"not JSON, {len(records[1][1] or b'')} bytes"
    assert (
        token_key["key"] == f"<key, {len(SECRET)} bytes>" and token_key["value"]["access_token"] == valid.access_token
    )
    assert "debug_token" not in with_extra["value"] and with_extra["value"]["event_id"] == str(valid.event_id)
    assert empty["value"] is None and empty["redacted"] == "no value" and empty["problem"] == "no value (a tombstone)"
    # the filters find a connection's invalid events too, by their key
    assert len(lines(await replay(topic, "--since", "beginning", "--user", str(user_id), env=env))) == 5


async def test_a_dead_letter_topic_is_shown_as_dlq_show_shows_it(
    kafka_bootstrap: str, topic: str, env: dict[str, str], encryption_key: str
) -> None:
    dlq = f"{topic}.dlq"
    await create_topics(kafka_bootstrap, [dlq], partitions=1)
    key = f"{uuid.uuid4()}:spotify"
    value = json.dumps({"event_type": "connection.created", "access_token": SECRET}).encode()
    sealed = LetterSeal(encryption_key).seal(value, topic, 0, 7)
    letter = DeadLetter(
        topic=topic,
        partition=0,
        offset=7,
        key=key,
        reason="access_token: not a valid ciphertext",
        sealed_value=sealed.sealed_base64,
        sealed_key_id=sealed.key_id,
        value_size=len(value),
        occurred_at=T0,
    )
    await produce(kafka_bootstrap, dlq, [(key.encode(), letter.to_bytes(), T0), (b"k", b"not a letter", T0)])

    result = await replay(dlq, "--since", "beginning", env=env)
    assert SECRET not in result.stdout
    shown, other = lines(result)
    assert shown["key"] == key and shown["offset"] == 0
    assert shown["dead_letter"] == {
        "position": f"{topic}[0]@7",
        "occurred_at": T0.isoformat(),
        "key": key,
        "reason": "access_token: not a valid ciphertext",
        "value": '{"event_type": "connection.created", "access_token": "<' + str(len(SECRET)) + ' chars>"}',
        "headers": "not kept (a dead letter of an earlier version)",
    }
    assert "value" not in shown and "sealed_value" not in result.stdout
    assert other["redacted"] == "not a dead letter, 12 bytes"
    user_id = key.split(":")[0]
    only_hers = await replay(dlq, "--since", "beginning", "--user", user_id, env=env)
    assert [line["offset"] for line in lines(only_hers)] == [0]


async def test_table_format_prints_the_same_records(
    three_hours: list[TokenRefreshed], topic: str, env: dict[str, str]
) -> None:
    wide = env | {"COLUMNS": "1000"}  # rich's width when stdout is not a terminal (else 80: cells fold)
    args = ("replay", topic, "--since", "beginning", "--until", "2026-01-01T00:00:00Z", "--format", "table")
    result = run(*args, env=wide)
    assert result.returncode == 0, result.stderr
    header_line, row_line = result.stdout.splitlines()[1:4:2]
    assert [cell.strip() for cell in header_line.split("\u2503")[1:-1]] == [
        "topic",
        "partition",
        "offset",
        "timestamp",
        "key",
        "value",
    ]
    first = three_hours[0]
    cells = [cell.strip() for cell in row_line.split("\u2502")[1:-1]]
    assert cells[0] == topic and cells[1] in ("0", "1") and cells[2] == "0"
    assert cells[3:] == [
        "2026-01-01T00:00:00.000Z",
        first.key,
        json.dumps(json.loads(first.to_bytes()), separators=(",", ":")),
    ]
    assert str(three_hours[1].event_id) not in result.stdout
    assert result.stderr == "1 record(s)\n"
    narrow = run("replay", topic, "--since", "beginning", "--format", "table", env=env)
    assert narrow.returncode == 0 and "\u2026" not in narrow.stdout  # folded over several lines, never cut: "…"
    assert narrow.stdout.count("\u250f") == 1  # one table for the whole range, both partitions


async def test_follow_prints_new_records_until_sigterm(
    three_hours: list[TokenRefreshed], topic: str, env: dict[str, str], kafka_bootstrap: str
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stream_app",
        "replay",
        topic,
        "--since",
        "2026-01-01T02:00:00Z",
        "--follow",
        env={"PATH": "/usr/bin:/bin", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        first = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        assert first["value"]["event_id"] == str(three_hours[2].event_id)
        later = refreshed(uuid.uuid4(), "discord")
        await produce(kafka_bootstrap, topic, [record(later, datetime.now(UTC))])
        second = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        assert second["value"]["event_id"] == str(later.event_id)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert (await process.stderr.read()).decode() == "2 record(s)\n"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_follow_and_until_together_are_refused(env: dict[str, str]) -> None:
    result = await replay("t", "--since", "beginning", "--until", "2026-01-01T00:00:00Z", "--follow", env=env)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1


@pytest.fixture
def nothing_listens() -> Iterator[str]:
    yield f"127.0.0.1:{free_port()}"


@pytest.mark.parametrize("command", [["replay", "token.refreshed", "--since", "beginning"], ["dlq", "show", "x.dlq"]])
def test_broker_down_is_one_line_and_exit_1(command: list[str], nothing_listens: str, encryption_key: str) -> None:
    result = run(*command, env={"ENCRYPTION_KEY": encryption_key, "KAFKA_BOOTSTRAP_SERVERS": nothing_listens})
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"token-refresh: reading '{command[-1] if command[0] == 'dlq' else command[1]}': cannot reach a Kafka broker "
        f"at {nothing_listens} (KAFKA_BOOTSTRAP_SERVERS)"
    ]


async def test_a_missing_topic_is_one_line_and_exit_1(env: dict[str, str], topic: str) -> None:
    result = await replay(topic, "--since", "beginning", env=env)
    assert result.returncode == 1
    assert result.stderr == f"token-refresh: topic '{topic}' does not exist\n"
