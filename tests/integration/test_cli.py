"""`token-refresh` as a user runs it: help everywhere, one-line failures, dead-letter replay
(`replay` itself: test_replay_cli.py)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from schemas import DeadLetter
from tests.support.kafka import TopicReader, create_topics, produce

COMMANDS = [
    "worker",
    "api",
    "migrate",
    "keygen",
    "sandbox",
    "refresh",
    "status",
    "bulk-refresh",
    "replay",
    "connect",
    "disconnect",
    "rotate-keys",
    "dlq",
]


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_app", *args],
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS), ["dlq", "replay"]])
def test_every_level_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: token-refresh")
    if not command:
        for name in COMMANDS:
            assert re.search(rf"^\s+{name}\s", result.stdout, re.MULTILINE), name


def test_keygen_prints_a_fresh_usable_key() -> None:
    first, second = run("keygen").stdout.strip(), run("keygen").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", first) and first != second


VALID_KEY = "{generated}"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "ENCRYPTION_KEY"),
        ({"ENCRYPTION_KEY": "your-64-character-hex-key"}, "ENCRYPTION_KEY"),
        ({"ENCRYPTION_KEY": "0" * 64}, "ENCRYPTION_KEY"),
        ({"ENCRYPTION_KEY": "abc"}, "ENCRYPTION_KEY"),
        ({"ENCRYPTION_KEY": VALID_KEY, "SPOTFY_CLIENT_ID": "x"}, "SPOTFY_CLIENT_ID"),
        ({"ENCRYPTION_KEY": VALID_KEY, "DISCORD_CLIENT_ID": "x"}, "DISCORD_CLIENT_SECRET"),
        ({"ENCRYPTION_KEY": VALID_KEY, "REFRESH_MAX_ATTEMPTS": "many"}, "REFRESH_MAX_ATTEMPTS"),
        ({"ENCRYPTION_KEY": VALID_KEY, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, "KAFKA_BOOTSTRAP_SERVERS"),
    ],
)
def test_bad_settings_stop_the_worker_with_one_line(
    env: dict[str, str], named: str, encryption_key: str, tmp_path: Path
) -> None:
    env = {name: encryption_key if value == VALID_KEY else value for name, value in env.items()}
    result = run("worker", env=env, cwd=tmp_path)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert named in lines[0]
    assert encryption_key not in result.stderr and "your-64-character" not in result.stderr


def test_refresh_rejects_a_malformed_user_id(encryption_key: str, tmp_path: Path) -> None:
    result = run("refresh", "not-a-uuid", "spotify", env={"ENCRYPTION_KEY": encryption_key}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "token-refresh: USER_ID: not a UUID: 'not-a-uuid'"


@pytest.mark.kafka
async def test_dlq_replay_from_the_shell(kafka_bootstrap: str, encryption_key: str) -> None:
    source = f"events.{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_bootstrap, [source, f"{source}.dlq"], partitions=1)
    letter = DeadLetter(
        topic=source, partition=0, offset=41, key="k", value_base64=base64.b64encode(b'{"a": 1}').decode(), reason="why"
    )
    await produce(kafka_bootstrap, f"{source}.dlq", [(b"k", letter.to_bytes())])
    env = {"ENCRYPTION_KEY": encryption_key, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}

    # A letter of an earlier version (value_base64, unauthenticated) on purpose: only --legacy replays it.
    dry = run("dlq", "replay", f"{source}.dlq", "--dry-run", "--legacy", env=env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.strip() == f"{source}[0]@41\twhy" and "would replay 1" in dry.stderr

    real = run("dlq", "replay", f"{source}.dlq", "--legacy", env=env)
    assert real.returncode == 0 and "replayed 1" in real.stderr
    assert "replayed 0" in run("dlq", "replay", f"{source}.dlq", "--legacy", env=env).stderr  # resumes
    async with TopicReader(kafka_bootstrap, [source]) as reader:
        assert await reader.wait_for(lambda _topic, _value: True, timeout=30) == {"a": 1}
    replayed = run("replay", source, "--since", "beginning", env=env)  # the one record it holds
    assert [json.loads(line)["offset"] for line in replayed.stdout.splitlines()] == [0]


@pytest.mark.kafka
async def test_dlq_replay_exits_non_zero_when_a_record_cannot_be_replayed(
    kafka_bootstrap: str, encryption_key: str
) -> None:
    source = f"events.{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_bootstrap, [source, f"{source}.dlq"], partitions=1)
    # Its value was not kept, and its topic no longer holds offset 7: nothing to send back.
    letter = DeadLetter(
        topic=source,
        partition=0,
        offset=7,
        key="k",
        value_base64="",
        reason="why",
        value_size=900_000,
        value_omitted=True,
    )
    await produce(kafka_bootstrap, f"{source}.dlq", [(b"k", letter.to_bytes())])
    env = {"ENCRYPTION_KEY": encryption_key, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}

    result = run("dlq", "replay", f"{source}.dlq", env=env)
    assert result.returncode == 1
    assert "replayed 0" in result.stderr and "not replayed 1" in result.stderr
    assert f"{source}[0]@7" in result.stderr
