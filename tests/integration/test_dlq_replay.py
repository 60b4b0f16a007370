"""Replaying a DLQ after a fix is one command: each dead letter goes back once, as it was."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaConsumer

from schemas import DeadLetter
from stream_app.crypto import TokenCipher, generate_key
from stream_app.dlq_replay import ReplayEntry, replay_dead_letters
from stream_app.errors import TokenRefreshError
from stream_app.settings import Settings, load_settings
from tests.integration.conftest import Stack
from tests.support.kafka import TopicReader, create_topics, produce

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def _settings(stack: Stack, encryption_key: str, app_id: str | None = None) -> Settings:
    return load_settings(
        encryption_key=encryption_key,
        kafka_bootstrap_servers=stack.bootstrap,
        kafka_app_id=app_id or f"dlq-replay-test-{uuid.uuid4().hex[:8]}",
    )


def _dead_letter(topic: str, key: str | None, value: bytes, reason: str, offset: int = 0) -> bytes:
    return DeadLetter(
        topic=topic, partition=0, offset=offset, key=key, value_base64=base64.b64encode(value).decode(), reason=reason
    ).to_bytes()


async def _private_topics(bootstrap: str) -> tuple[str, str]:
    """A source topic and its DLQ that no worker reads (to check exactly what a replay sends)."""
    source = f"dlq-replay-source.{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, [source, f"{source}.dlq"])
    return source, f"{source}.dlq"


async def _records(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Everything on ``topic`` now (key, value), in partition then offset order."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        while not consumer.assignment():  # without a group: every partition, at once
            await asyncio.sleep(0.05)
        partitions = sorted(consumer.assignment())
        ends = await consumer.end_offsets(partitions)
        found = []
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                found += [(r.key, r.value) for r in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])]
        return found
    finally:
        await consumer.stop()


async def test_replay_after_a_fix_processes_each_dead_letter_once(
    stack: Stack, encryption_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker's own DLQ, replayed with the operator's settings (the worker's app id)."""
    caplog.set_level(logging.DEBUG)  # even at DEBUG, the replay logs no record value
    source = stack.topics["connection.created"]
    dlq = f"{source}.dlq"
    settings = _settings(stack, encryption_key, stack.worker.env["KAFKA_APP_ID"])

    # Input the worker dead-letters, and will again: it is still malformed after the "fix".
    github, _ = stack.connection_event("github", expires_in=None)
    valid = github.model_dump(mode="json")
    malformed = {
        f"bad-{uuid.uuid4().hex[:8]}".encode(): value
        for value in (
            b"{not json",
            json.dumps(valid | {"platform": "myspace"}).encode(),
            json.dumps(valid | {"access_token": TokenCipher(generate_key()).encrypt("ghp_other_key")}).encode(),
        )
    }
    await produce(stack.bootstrap, source, list(malformed.items()))
    # A valid connection that failed earlier because of a since-fixed bug, dead-lettered then.
    event, _grant = stack.connection_event("spotify", expires_in=timedelta(minutes=2))
    fixed_reason = "processing error: OperationalError"
    await produce(
        stack.bootstrap, dlq, [(event.key.encode(), _dead_letter(source, event.key, event.to_bytes(), fixed_reason))]
    )

    async with TopicReader(stack.bootstrap, [dlq]) as dead:
        reasons = {}
        for key in malformed:
            reasons[key] = (await _copies(dead, key, 1))[0]["reason"]

        progress: list[tuple[int, int]] = []
        caplog.clear()  # from here on the test produces nothing itself (its helpers log what they send)
        async with stack.reader("token.refreshed") as refreshed:
            report = await replay_dead_letters(
                settings, dlq, progress=lambda done, total: progress.append((done, total))
            )
            assert (report.replayed, report.skipped_unreadable, report.skipped_foreign) == (4, 0, 0)
            assert report.by_reason == Counter([*reasons.values(), fixed_reason])
            assert report.entries == []
            assert progress[0] == (0, 4) and progress[-1] == (4, 4)
            assert [done for done, _ in progress] == sorted(done for done, _ in progress)

            # The fixed one is processed now: stored, and refreshed since it is due.
            await refreshed.wait_for(lambda _t, e: e.get("user_id") == str(event.user_id))
        row = await stack.row(event.user_id, "spotify")
        assert row is not None and row.status == "connected"

        # The malformed ones are dead-lettered again, with the same reasons, as new DLQ records.
        for key, value in malformed.items():
            again = await _copies(dead, key, 2)
            assert again[1]["reason"] == reasons[key]
            assert again[1]["offset"] > again[0]["offset"]  # a new record of the source topic
            assert base64.b64decode(str(again[1]["value_base64"])) == value

        # A second run replays only what arrived since: the three re-dead-lettered records.
        second = await replay_dead_letters(settings, dlq)
        assert (second.replayed, second.skipped_unreadable, second.skipped_foreign) == (3, 0, 0)
        assert second.by_reason == Counter(reasons.values())
        for key in malformed:  # settle before the module's other tests
            await _copies(dead, key, 3)

    for value in [*malformed.values(), event.to_bytes()]:
        assert value.decode() not in caplog.text
        assert base64.b64encode(value).decode() not in caplog.text
    assert event.access_token not in caplog.text and "ghp_" not in caplog.text


async def _copies(reader: TopicReader, key: bytes, count: int, timeout: float = 60.0) -> list[dict[str, object]]:
    """The DLQ records of ``key`` once there are ``count`` of them, in offset order."""
    deadline = time.monotonic() + timeout
    while True:
        found = [json.loads(value) for _t, k, value in reader.records if k == key and value]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"{len(found)} of {count} dead letters of {key!r}"
        await reader.drain(0.5)


async def test_dry_run_sends_and_commits_nothing_and_limit_resumes(stack: Stack, encryption_key: str) -> None:
    source, dlq = await _private_topics(stack.bootstrap)
    settings = _settings(stack, encryption_key)
    letters = [
        (b"user-1:spotify", b'{"first": 1}', "platform: unknown platform 'x'"),
        (b"\xff\xfe not utf-8", b'{"second": 2}', "Invalid JSON"),
        (None, b"", "empty record (no value)"),
    ]
    dead = [
        (key, _dead_letter(source, key and key.decode(errors="replace"), value, reason, offset=n))
        for n, (key, value, reason) in enumerate(letters)
    ]
    await produce(stack.bootstrap, dlq, [(key or b"", value) for key, value in dead])

    dry = await replay_dead_letters(settings, dlq, dry_run=True)
    assert dry.dry_run and dry.replayed == 3
    assert sorted(dry.entries, key=lambda e: e.offset) == [
        ReplayEntry(source, 0, n, reason) for n, (_k, _v, reason) in enumerate(letters)
    ]
    assert await _records(stack.bootstrap, source) == []

    # Nothing was committed: the real runs still see all three (the first, limited, takes one).
    first = await replay_dead_letters(settings, dlq, limit=1)
    assert first.replayed == 1 and first.entries == []
    rest = await replay_dead_letters(settings, dlq)
    assert rest.replayed == 2
    assert (await replay_dead_letters(settings, dlq)).replayed == 0

    # The original bytes and keys, each once.
    assert sorted(await _records(stack.bootstrap, source), key=repr) == sorted(
        [(key, value) for key, value, _r in letters], key=repr
    )


async def test_unreadable_and_foreign_records_are_skipped_and_counted(stack: Stack, encryption_key: str) -> None:
    source, dlq = await _private_topics(stack.bootstrap)
    settings = _settings(stack, encryption_key)
    await produce(
        stack.bootstrap,
        dlq,
        [
            (b"k1", b"{not json at all"),
            (b"k2", json.dumps({"event_type": "connection.created"}).encode()),
            (b"k3", json.dumps({**json.loads(_dead_letter(source, "k3", b"{}", "r")), "value_base64": "*!"}).encode()),
            (b"k4", None),
            (b"k5", _dead_letter(stack.topics["token.expiring"], "k5", b"{}", "from elsewhere")),
            (b"k6", _dead_letter(source, "k6", b'{"ok": true}', "since fixed")),
        ],
    )
    report = await replay_dead_letters(settings, dlq)
    assert (report.replayed, report.skipped_unreadable, report.skipped_foreign) == (1, 4, 1)
    assert report.by_reason == Counter({"since fixed": 1})
    assert await _records(stack.bootstrap, source) == [(b"k6", b'{"ok": true}')]
    # Skipped records are passed for good, not retried by the next run.
    again = await replay_dead_letters(settings, dlq)
    assert (again.replayed, again.skipped_unreadable, again.skipped_foreign) == (0, 0, 0)


async def test_missing_or_non_dlq_topic_is_one_clear_error(stack: Stack, encryption_key: str) -> None:
    settings = _settings(stack, encryption_key)
    with pytest.raises(TokenRefreshError, match="does not exist"):
        await replay_dead_letters(settings, f"no-such-topic.{uuid.uuid4().hex[:8]}.dlq")
    with pytest.raises(TokenRefreshError, match="not a dead-letter topic"):
        await replay_dead_letters(settings, stack.topics["connection.created"])
