"""A dead letter keeps its record's headers, sealed, and `dlq replay` sends them back: in order,
repeated names and null values kept, whether from the letter or read back from the topic. So a
signed `connection.created` dead-lettered because its tokens are under a key the worker lacks is
stored once the key is configured and the letter replayed, with signatures required."""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas import ConnectionCreated, DeadLetter, encrypt_bound_token, sign_event
from stream_app.crypto import generate_key
from stream_app.dlq_replay import replay_dead_letters
from stream_app.sealed_letters import Headers, LetterSeal
from stream_app.settings import load_settings
from tests.integration.conftest import Stack
from tests.support.dead_letters import readable_markers
from tests.support.kafka import TopicReader, create_topics, produce
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

PRODUCER_ID, PRODUCER_SECRET = "producer-a", generate_key()
Record = tuple[bytes | None, bytes | None, Headers]


async def _send(bootstrap: str, topic: str, records: list[Record]) -> list[int]:
    """Send ``records`` (key, value, headers) to partition 0 of ``topic``; their offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent = [
            await producer.send_and_wait(topic, value, key=key, headers=headers, partition=0)
            for key, value, headers in records
        ]
    finally:
        await producer.stop()
    return [metadata.offset for metadata in sent]


async def _records(bootstrap: str, topic: str, partitions: int = 1) -> list[Record]:
    """Everything in ``topic`` now, headers included, partition by partition."""
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        found: list[Record] = []
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
                found += [(r.key, r.value, list(r.headers)) for r in batch if r.offset < ends[tp]]
        return found
    finally:
        await consumer.stop()


def _letter(seal: LetterSeal, topic: str, offset: int, record: Record, *, with_headers: bool = True) -> bytes:
    """A dead letter as the worker writes it (``with_headers=False``: as the version before did)."""
    key, value, headers = record
    assert value is not None
    sealed = seal.seal(value, topic, 0, offset)
    return DeadLetter(
        topic=topic,
        partition=0,
        offset=offset,
        key=key.decode() if key is not None else None,
        reason="processing error: OperationalError",
        sealed_value=sealed.sealed_base64,
        sealed_key_id=sealed.key_id,
        sealed_headers=seal.seal_headers(headers, topic, 0, offset) if with_headers else "",
        value_size=len(value),
    ).to_bytes()


async def test_replay_sends_each_record_back_with_its_headers(stack: Stack, encryption_key: str) -> None:
    source = f"dlq-headers.{uuid.uuid4().hex[:8]}"  # no worker reads it: what arrives is what replay sent
    dlq = f"{source}.dlq"
    await create_topics(stack.bootstrap, [source, dlq], partitions=1)
    seal = LetterSeal(encryption_key)
    in_topic: Record = (b"k-read-back", b'{"n": 1}', [("x-id", b"1"), ("x-none", None), ("x-id", b"2"), ("a", b"")])
    [at] = await _send(stack.bootstrap, source, [in_topic])
    sealed: Record = (b"k-sealed", b'{"n": 2}', [("signature-key-id", b"p"), ("signature", b"ff" * 32), ("s", b"")])
    earlier: Record = (b"k-earlier", b'{"n": 3}', [])
    omitted = DeadLetter(
        topic=source, partition=0, offset=at, key="k-read-back", reason="r", value_size=8, value_omitted=True
    )
    await produce(
        stack.bootstrap,
        dlq,
        [
            (b"k-read-back", omitted.to_bytes()),  # its record is read back from the topic, headers too
            (b"k-sealed", _letter(seal, source, at + 50, sealed)),  # never in the topic: sent from the letter
            (
                b"k-earlier",
                _letter(seal, source, at + 51, (b"k-earlier", b'{"n": 3}', [("lost", b"x")]), with_headers=False),
            ),
        ],
    )
    settings = load_settings(
        encryption_key=encryption_key,
        kafka_bootstrap_servers=stack.bootstrap,
        kafka_app_id=f"dlq-headers-{uuid.uuid4().hex[:8]}",
    )

    report = await replay_dead_letters(settings, dlq)

    assert (report.replayed, report.reread, report.all_replayed) == (3, 1, True)
    assert await _records(stack.bootstrap, source) == [in_topic, in_topic, sealed, earlier]


@pytest.fixture(scope="module")
def signed(stack: Stack) -> Stack:
    """The module's stack, its worker restarted with producer signatures required."""
    _restart(stack, "worker-signed.log")
    return stack


def _restart(stack: Stack, log_name: str, **extra: str) -> None:
    stack.worker.stop()
    env = {
        **stack.worker.env,
        "PRODUCER_SIGNING_KEYS": f"{PRODUCER_ID}:{PRODUCER_SECRET}",
        "REQUIRE_SIGNED_CONNECTION_EVENTS": "true",
        **extra,
    }
    stack.worker = WorkerProcess(env, stack.worker.log_path.with_name(log_name)).start()
    stack.worker.wait_ready(90)


def _keyed(key: str, _topic: str, letter: dict[str, Any]) -> bool:
    return letter.get("key") == key


async def test_a_signed_event_dead_lettered_for_a_key_not_yet_deployed_is_stored_once_replayed(
    signed: Stack, encryption_key: str
) -> None:
    stack = signed
    source = stack.topics["connection.created"]
    new_key = generate_key()  # the producers' key, which the deploy has not brought to the worker yet
    grant = stack.sandbox.create_grant("spotify")
    user_id = uuid.uuid4()
    event = ConnectionCreated(
        user_id=user_id,
        platform="spotify",
        access_token=encrypt_bound_token(grant["live_access_token"], new_key, user_id, "spotify", "access_token"),
        refresh_token=encrypt_bound_token(grant["live_refresh_token"], new_key, user_id, "spotify", "refresh_token"),
        token_expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    marker = f"ya29.hdr{uuid.uuid4().hex[:12]}"
    signed_by = sign_event(event, PRODUCER_ID, PRODUCER_SECRET)
    signature = signed_by[1][1].decode()
    headers: Headers = [("traceparent", marker.encode()), *signed_by, ("x-producer", b"one"), ("x-producer", b"two")]
    record: Record = (event.key.encode(), event.to_bytes(), headers)

    async with TopicReader(stack.bootstrap, [f"{source}.dlq"]) as dead:
        await _send(stack.bootstrap, source, [record])
        letter = await dead.wait_for(functools.partial(_keyed, event.key), timeout=60)
        assert "replay it once that key is configured" in letter["reason"]
        assert readable_markers([marker, signature], *(b for r in dead.records for b in r[1:])) == []

    _restart(stack, "worker-signed-new-key.log", RETIRED_ENCRYPTION_KEYS=new_key)  # the deploy reaches it
    settings = load_settings(
        encryption_key=encryption_key,
        kafka_bootstrap_servers=stack.bootstrap,
        kafka_app_id=stack.worker.env["KAFKA_APP_ID"],
    )
    report = await replay_dead_letters(settings, f"{source}.dlq")
    assert (report.replayed, report.all_replayed) == (1, True)

    row = await stack.stored_row(user_id, "spotify", timeout=60)
    assert stack.cipher.decrypt_column(row, "access_token") == grant["live_access_token"]  # bound anew, ours
    replayed = [r for r in await _records(stack.bootstrap, source, partitions=4) if r[0] == event.key.encode()]
    assert replayed == [record, record]
