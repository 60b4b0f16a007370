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
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.structs import RecordMetadata

from agents.context import _dead_letter_key, _full_dead_letter
from schemas import DeadLetter
from stream_app.crypto import TokenCipher, generate_key
from stream_app.dlq_replay import LEGACY_REFUSED, ReplayEntry, replay_dead_letters
from stream_app.errors import TokenRefreshError
from stream_app.sealed_letters import LetterSeal
from stream_app.settings import Settings, load_settings
from tests.integration.conftest import Stack
from tests.support.dead_letters import opened, readable_markers
from tests.support.kafka import TopicReader, create_topics, produce

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def _settings(stack: Stack, encryption_key: str, app_id: str | None = None) -> Settings:
    return load_settings(
        encryption_key=encryption_key,
        kafka_bootstrap_servers=stack.bootstrap,
        kafka_app_id=app_id or f"dlq-replay-test-{uuid.uuid4().hex[:8]}",
    )


def _dead_letter(
    topic: str, key: str | None, value: bytes, reason: str, offset: int = 0, *, sealed_with: str, partition: int = 0
) -> bytes:
    """A dead letter as the worker writes it: the value sealed (under ``sealed_with``'s dead-letter key)."""
    sealed = LetterSeal(sealed_with).seal(value, topic, partition, offset)
    return DeadLetter(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        reason=reason,
        sealed_value=sealed.sealed_base64,
        sealed_key_id=sealed.key_id,
        value_size=len(value),
    ).to_bytes()


def _legacy_letter(topic: str, key: str | None, value: bytes, reason: str, offset: int = 0) -> bytes:
    """A dead letter as earlier versions wrote it: the value in base64."""
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
    malformed = {  # keys of the service's own shape: their dead letters are found by them
        f"{uuid.uuid4()}:github".encode(): value
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
        stack.bootstrap,
        dlq,
        [
            (
                event.key.encode(),
                _dead_letter(source, event.key, event.to_bytes(), fixed_reason, sealed_with=encryption_key),
            )
        ],
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
            assert (
                DeadLetter.model_validate(again[1]).offset > DeadLetter.model_validate(again[0]).offset
            )  # a new record
            assert opened(again[1], encryption_key) == value

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
        (
            key,
            _dead_letter(
                source,
                None if key is None else key.decode(errors="replace"),
                value,
                reason,
                n,
                sealed_with=encryption_key,
            ),
        )
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
            (
                b"k3",
                json.dumps({**json.loads(_legacy_letter(source, "k3", b"{}", "r")), "value_base64": "*!"}).encode(),
            ),
            (b"k4", None),
            (
                b"k5",
                _dead_letter(stack.topics["token.expiring"], "k5", b"{}", "from elsewhere", sealed_with=encryption_key),
            ),
        ],
    )
    report = await replay_dead_letters(settings, dlq)
    assert (report.replayed, report.skipped_unreadable, report.skipped_foreign) == (0, 4, 1)
    # Skipped records are passed for good, not retried by the next run.
    again = await replay_dead_letters(settings, dlq)
    assert (again.replayed, again.skipped_unreadable, again.skipped_foreign) == (0, 0, 0)
    assert await _records(stack.bootstrap, source) == []


async def test_a_letter_of_an_earlier_version_is_replayed_only_with_legacy(stack: Stack, encryption_key: str) -> None:
    """Its value_base64 proves nothing: whoever can write the DLQ (a stolen worker credential)
    could forge one that becomes a connection.created."""
    source, dlq = await _private_topics(stack.bootstrap)
    settings = _settings(stack, encryption_key)
    forged = (b"k6", _legacy_letter(source, "k6", b'{"forged": true}', "since fixed"))
    await produce(stack.bootstrap, dlq, [forged])

    for dry_run in (True, False):
        refused = await replay_dead_letters(settings, dlq, dry_run=dry_run)
        assert (refused.replayed, refused.all_replayed) == (0, False)
        [entry] = refused.not_replayed
        assert (entry.offset, entry.reason, entry.why) == (0, "since fixed", LEGACY_REFUSED)
        assert "--legacy" in entry.why
    assert await _records(stack.bootstrap, source) == []

    await produce(stack.bootstrap, dlq, [forged])  # the run above passed the first for good
    report = await replay_dead_letters(settings, dlq, legacy=True)
    assert (report.replayed, report.all_replayed, report.by_reason) == (1, True, Counter({"since fixed": 1}))
    assert await _records(stack.bootstrap, source) == [(b"k6", b'{"forged": true}')]


async def test_a_key_kept_only_sealed_is_replayed_as_it_was(stack: Stack, encryption_key: str) -> None:
    """A key not of the service's shape (here a token, not even UTF-8) is readable nowhere in
    the dead letter, which goes under the empty key; the replay re-sends the original key."""
    source, dlq = await _private_topics(stack.bootstrap)
    settings = _settings(stack, encryption_key)
    token_key = b"ya29.KeyToken_MARK\xff"
    value = b'{"access_token": "ya29.value_MARK"'
    message = SimpleNamespace(topic=source, partition=0, offset=5, key=token_key, value=value, headers=[])
    letter = _full_dead_letter(message, "Invalid JSON", LetterSeal(encryption_key))  # type: ignore[arg-type]
    kafka_key = _dead_letter_key(message)  # type: ignore[arg-type]
    assert kafka_key == b"" and readable_markers(["_MARK"], kafka_key, letter) == []
    await produce(stack.bootstrap, dlq, [(kafka_key, letter)])

    report = await replay_dead_letters(settings, dlq)
    assert (report.replayed, report.reread, report.all_replayed) == (1, 0, True)
    assert await _records(stack.bootstrap, source) == [(token_key, value)]


async def test_missing_or_non_dlq_topic_is_one_clear_error(stack: Stack, encryption_key: str) -> None:
    settings = _settings(stack, encryption_key)
    with pytest.raises(TokenRefreshError, match="does not exist"):
        await replay_dead_letters(settings, f"no-such-topic.{uuid.uuid4().hex[:8]}.dlq")
    with pytest.raises(TokenRefreshError, match="not a dead-letter topic"):
        await replay_dead_letters(settings, stack.topics["connection.created"])


# --- dead letters that do not carry their record ------------------------------------------------


async def _produce_at(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> list[RecordMetadata]:
    """Produce in order; where each record landed."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        return [await producer.send_and_wait(topic, value, key=key) for key, value in records]
    finally:
        await producer.stop()


def _valueless(
    source: str, at: tuple[int, int], key: bytes | None, reason: str, size: int, *, withheld: bool = False
) -> bytes:
    """A dead letter as the worker writes it when it does not keep the value: omitted (too large
    for a dead letter, or a minimal dead letter) or, ``withheld``, as earlier versions wrote one
    whose value was withheld (``redacted``, empty)."""
    return DeadLetter(
        topic=source,
        partition=at[0],
        offset=at[1],
        key=None if key is None else key.decode("utf-8", errors="replace"),
        value_base64="",
        reason=reason,
        value_size=size,
        value_omitted=not withheld,
        redacted=withheld,
    ).to_bytes()


async def test_a_dead_letter_without_its_record_replays_it_from_its_topic_never_as_an_empty_record(
    stack: Stack, encryption_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    source, dlq = await _private_topics(stack.bootstrap)
    settings = _settings(stack, encryption_key)
    secret = f"sbx_plain_{uuid.uuid4().hex}"
    originals: list[tuple[bytes | None, bytes]] = [
        (b"user-1:spotify", b'{"padding": "' + b"x" * 800_000 + b'"}'),  # too large for a dead letter
        (b"user-2:spotify", b'{"access_token": "' + secret.encode() + b'", '),  # unparsable, names a token
        (b"\xff not utf-8", b'{"minimal": true}'),  # its full dead letter could not be built
        (b"user-3:spotify", b'{"sealed": "under a key no longer configured"}'),
    ]
    at = [(m.partition, m.offset) for m in await _produce_at(stack.bootstrap, source, originals)]
    reasons = [
        "processing error: OperationalError",
        "Invalid JSON: EOF",
        "unknown platform [record not copied: X]",
        "r",
    ]
    letters = [
        _valueless(source, at[0], originals[0][0], reasons[0], len(originals[0][1])),
        _valueless(source, at[1], originals[1][0], reasons[1], len(originals[1][1]), withheld=True),
        _valueless(source, at[2], originals[2][0], reasons[2], len(originals[2][1])),
        _dead_letter(
            source,
            "user-3:spotify",
            originals[3][1],
            reasons[3],
            at[3][1],
            partition=at[3][0],
            sealed_with=generate_key(),
        ),
    ]
    await produce(stack.bootstrap, dlq, [(key, letter) for (key, _v), letter in zip(originals, letters, strict=True)])

    caplog.clear()  # from here on, no record value may be logged (the helpers above log what they send)
    dry = await replay_dead_letters(settings, dlq, dry_run=True)
    assert sorted(await _records(stack.bootstrap, source), key=repr) == sorted(originals, key=repr)
    report = await replay_dead_letters(settings, dlq)

    # Each record went back once, byte for byte, under its own key (a non-UTF-8 one included).
    assert sorted(await _records(stack.bootstrap, source), key=repr) == sorted(originals * 2, key=repr)
    assert (report.replayed, report.reread, report.not_replayed, report.all_replayed) == (4, 4, [], True)
    assert report.by_reason == Counter(reasons)
    assert (dry.replayed, dry.reread, dry.not_replayed, dry.all_replayed) == (4, 4, [], True)
    assert sorted(dry.entries, key=lambda e: e.reason) == sorted(
        (ReplayEntry(source, *position, reason) for position, reason in zip(at, reasons, strict=True)),
        key=lambda e: e.reason,
    )
    assert secret not in caplog.text


async def test_a_dead_letter_whose_record_is_gone_is_listed_and_passed_never_replayed_empty(
    stack: Stack, encryption_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    source = f"dlq-replay-gone.{uuid.uuid4().hex[:8]}"
    dlq = f"{source}.dlq"
    await create_topics(stack.bootstrap, [source, dlq], partitions=1)
    settings = _settings(stack, encryption_key)
    originals: list[tuple[bytes | None, bytes]] = [(f"k{n}".encode(), f'{{"n": {n}}}'.encode()) for n in range(3)]
    at = [(m.partition, m.offset) for m in await _produce_at(stack.bootstrap, source, originals)]
    await _delete_records_before(stack.bootstrap, TopicPartition(source, 0), at[2][1])  # as retention would
    beyond, no_partition = (0, at[2][1] + 50), (7, 0)
    size = len(originals[2][1])
    letters = [  # (DLQ record, why it cannot be replayed: a phrase of it)
        (_valueless(source, at[0], b"k0", "r0", size), "value omitted from the dead letter; no longer retained"),
        (_valueless(source, at[1], b"k1", "r1", size, withheld=True), "(redacted); no longer retained"),
        (_valueless(source, at[2], b"k2", "r2", size + 1), "now holds another record"),
        (_valueless(source, at[2], b"other", "r3", size), "now holds another record"),
        (_valueless(source, beyond, b"k9", "r4", size), "no longer retained"),
        (_valueless(source, no_partition, b"k9", "r5", size), "has no partition 7"),
        (_valueless(source, at[2], b"k2", "r6", 2 * 1024 * 1024), "over the input limit"),
        (
            _dead_letter(source, "k0", originals[0][1], "r8", at[0][1], sealed_with=generate_key()),
            "sealed value not opened: sealed under dead-letter key",
        ),
        (_dead_letter(source, "k8", b'{"kept": true}', "r7", at[2][1] + 1, sealed_with=encryption_key), None),
    ]
    await produce(stack.bootstrap, dlq, [(b"", letter) for letter, _why in letters])

    dry = await replay_dead_letters(settings, dlq, dry_run=True)
    dry_log = caplog.text
    caplog.clear()
    real = await replay_dead_letters(settings, dlq)

    # Only the dead letter that kept its record was sent: nothing empty, nothing twice.
    assert await _records(stack.bootstrap, source) == [originals[2], (b"k8", b'{"kept": true}')]
    for report, log_text in ((dry, dry_log), (real, caplog.text)):
        assert (report.replayed, report.reread, report.all_replayed) == (1, 0, False)
        assert len(report.not_replayed) == len(letters) - 1
        for dlq_offset, (entry, (letter, why)) in enumerate(zip(report.not_replayed, letters, strict=False)):
            dead = DeadLetter.model_validate_json(letter)
            assert (entry.topic, entry.partition, entry.offset, entry.reason) == (
                source,
                dead.partition,
                dead.offset,
                dead.reason,
            )
            assert (entry.dead_letter_partition, entry.dead_letter_offset) == (0, dlq_offset)
            assert why is not None and why in entry.why, entry.why
            assert f"Not replayed {source}[{dead.partition}]@{dead.offset} (dead letter {dlq}[0]@{dlq_offset})" in (
                log_text
            )
    # Passed for good, like unreadable ones: the next run has nothing left.
    again = await replay_dead_letters(settings, dlq)
    assert (again.processed, again.all_replayed) == (0, True)


async def _delete_records_before(bootstrap: str, tp: TopicPartition, offset: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records({tp: RecordsToDelete(before_offset=offset)})
    finally:
        await admin.close()


async def test_a_letter_sealed_under_a_retired_key_replays_its_own_bytes(stack: Stack, encryption_key: str) -> None:
    source, dlq = await _private_topics(stack.bootstrap)
    old_key = generate_key()
    settings = load_settings(
        encryption_key=encryption_key,
        retired_encryption_keys=old_key,
        kafka_bootstrap_servers=stack.bootstrap,
        kafka_app_id=f"dlq-replay-test-{uuid.uuid4().hex[:8]}",
    )
    value = b'{"access_token": "ya29.retired_MARK", "x": [1, 2'
    # Its record is not in the topic (offset 99 was never written): only the sealed value can be sent.
    await produce(
        stack.bootstrap, dlq, [(b"k", _dead_letter(source, "k", value, "Invalid JSON", 99, sealed_with=old_key))]
    )
    report = await replay_dead_letters(settings, dlq)
    assert (report.replayed, report.reread, report.all_replayed) == (1, 0, True)
    assert await _records(stack.bootstrap, source) == [(b"k", value)]
