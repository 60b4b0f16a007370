"""The dead-letter path of the worker cannot raise: every record ends processed or dead-lettered,
never blocked behind a dead letter that cannot be built or sent, never dropped."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, TypeVar

import faust
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotEnoughReplicasError,
    TopicAuthorizationFailedError,
)
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from agents.context import WorkerContext
from schemas import DeadLetter
from stream_app.backoff import Backoff
from stream_app.crypto import generate_key
from stream_app.settings import load_settings

T = TypeVar("T")
PRODUCER_MAX_REQUEST_SIZE = 1024 * 1024  # aiokafka's default, which the publisher keeps
PLAIN = b"sbx_at_plaintext_value"
TOPIC = "token.expiring"
USER_KEY = f"{uuid.uuid4()}:spotify".encode()  # the service's own shape: kept readable


@pytest.fixture
def context() -> WorkerContext:
    settings = load_settings(encryption_key=generate_key())
    context = WorkerContext(faust.App("test-context", broker="kafka://127.0.0.1:1"), SimpleNamespace(settings=settings))  # type: ignore[arg-type]
    context.retry_backoff = Backoff(base=0.0, cap=0.0, jitter_ratio=0.0)
    return context


class Broker:
    """Stands in for ``WorkerContext.send``: fails with ``failures`` in turn, then keeps records."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.attempts: list[tuple[str, bytes, bytes]] = []
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def __call__(self, topic: str, key: bytes, value: bytes) -> None:
        self.attempts.append((topic, key, value))
        if self.failures:
            raise self.failures.pop(0)
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, [])
        if size > PRODUCER_MAX_REQUEST_SIZE:
            raise MessageSizeTooLargeError(f"{size} bytes")  # what the real producer does
        self.sent.append((topic, key, value))

    def letter(self) -> DeadLetter:
        assert len(self.sent) == 1
        topic, _key, value = self.sent[0]
        assert topic == f"{TOPIC}.dlq"
        return DeadLetter.model_validate_json(value)


def record(value: bytes | None, key: bytes | None = USER_KEY, offset: int = 7) -> Any:
    message = SimpleNamespace(topic=TOPIC, partition=2, offset=offset, key=key, value=value, tp=(TOPIC, 2))
    return SimpleNamespace(message=message)


async def within(seconds: float, work: Awaitable[T]) -> T:
    """``work`` must finish: a dead-letter path that retries forever fails here instead of hanging."""
    return await asyncio.wait_for(work, seconds)


HOSTILE = {
    "2 KB of [": b"[" * 2048,
    "200 KB of [": b"[" * 200_000,
    "deep objects": b'{"a":' * 100_000,
    "invalid UTF-8": b'{"platform": "\xff\xfe"}',
    "900 KB, invalid": json.dumps({"platform": "myspace", "padding": "x" * 900_000}).encode(),
    "1 MiB of [": b"[" * (1024 * 1024),
    "over 1 MiB": b"x" * (1024 * 1024 + 1),
    "plain token beside deep nesting": b'{"access_token": "%s", "x": ' % PLAIN + b"[" * 5000,
    "plain token in 900 KB": json.dumps({"access_token": PLAIN.decode(), "x": "é" * 450_000}).encode(),
}


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
async def test_any_record_is_dead_lettered_with_its_position_and_reason(
    context: WorkerContext, monkeypatch: pytest.MonkeyPatch, value: bytes
) -> None:
    broker = Broker()
    monkeypatch.setattr(context, "send", broker)
    await within(10, context.dead_letter(record(value), "record: Invalid JSON"))
    letter = broker.letter()
    assert (letter.topic, letter.partition, letter.offset, letter.key) == (TOPIC, 2, 7, USER_KEY.decode())
    assert letter.reason.startswith("record: Invalid JSON") and letter.value_size == len(value)
    assert PLAIN not in broker.sent[0][2]
    if not letter.value_omitted:
        assert letter.sealed_value and len(broker.attempts) == 1  # kept whole (sealed) when it fits


async def test_a_value_too_large_for_a_dead_letter_is_left_out_up_front(
    context: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = Broker()
    monkeypatch.setattr(context, "send", broker)
    await within(10, context.dead_letter(record(HOSTILE["900 KB, invalid"]), "platform: unknown platform"))
    letter = broker.letter()
    assert letter.value_omitted and letter.value_base64 == "" and letter.reason == "platform: unknown platform"
    assert len(broker.attempts) == 1  # computed before sending, not learnt from a refusal


@pytest.mark.parametrize(
    "refusal",
    [MessageSizeTooLargeError("too large"), TopicAuthorizationFailedError(), ValueError("a bug in send")],
    ids=lambda exc: type(exc).__name__,
)
async def test_a_dead_letter_refused_for_good_degrades_to_the_minimal_one(
    context: WorkerContext, monkeypatch: pytest.MonkeyPatch, refusal: Exception
) -> None:
    broker = Broker(refusal)
    monkeypatch.setattr(context, "send", broker)
    await within(5, context.dead_letter(record(b'{"platform": "myspace"}'), "platform: unknown platform"))
    letter = broker.letter()
    assert len(broker.attempts) == 2
    assert (letter.topic, letter.partition, letter.offset, letter.key) == (TOPIC, 2, 7, USER_KEY.decode())
    assert letter.value_omitted and letter.value_base64 == "" and letter.value_size == 23
    assert letter.reason.startswith("platform: unknown platform") and type(refusal).__name__ in letter.reason


@pytest.mark.parametrize(
    "transient",
    [KafkaConnectionError(), KafkaTimeoutError(), NotEnoughReplicasError(), OSError("connection reset")],
    ids=lambda exc: type(exc).__name__,
)
async def test_a_transient_failure_is_retried_until_the_full_dead_letter_goes(
    context: WorkerContext, monkeypatch: pytest.MonkeyPatch, transient: Exception
) -> None:
    broker = Broker(transient, transient, transient)
    monkeypatch.setattr(context, "send", broker)
    value = b'{"platform": "myspace"}'
    await within(5, context.dead_letter(record(value), "platform: unknown platform"))
    letter = broker.letter()
    assert len(broker.attempts) == 4
    assert not letter.value_omitted and letter.sealed_value and letter.reason == "platform: unknown platform"


async def test_the_minimal_dead_letter_waits_out_any_failure(
    context: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A few hundred bytes that cannot be sent point at the infrastructure (a forbidden topic):
    waiting holds the record; nothing is dropped, nothing raises."""
    broker = Broker(MessageSizeTooLargeError(), TopicAuthorizationFailedError(), KafkaTimeoutError())
    monkeypatch.setattr(context, "send", broker)
    await within(5, context.dead_letter(record(b"{}"), "reason"))
    assert len(broker.attempts) == 4 and broker.letter().value_omitted


async def test_a_huge_key_is_not_copied_whole_into_a_minimal_dead_letter(
    context: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = Broker(MessageSizeTooLargeError())
    monkeypatch.setattr(context, "send", broker)
    await within(5, context.dead_letter(record(b"{}", key=b"k" * 900_000), "reason"))
    letter = broker.letter()
    assert (letter.key, letter.key_size, letter.sealed_key) == (None, 900_000, "")  # read back from its topic
    assert broker.sent[0][1] == b""  # the Kafka key too


async def test_a_minimal_dead_letter_keeps_a_key_of_another_shape_only_sealed(
    context: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = Broker(MessageSizeTooLargeError())
    monkeypatch.setattr(context, "send", broker)
    token_key = b"ya29.KeyToken_MARK"
    await within(5, context.dead_letter(record(b'{"platform": "myspace"}', key=token_key), "reason"))
    (_topic, kafka_key, value), letter = broker.sent[0], broker.letter()
    assert b"_MARK" not in kafka_key + value and letter.value_omitted
    assert (letter.key, letter.key_size, kafka_key) == (None, len(token_key), b"")
    assert context.letter_seal is not None and context.letter_seal.unseal_key(letter) == token_key


async def test_cancellation_propagates_from_the_dead_letter_path(
    context: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(context, "send", Broker(asyncio.CancelledError()))
    with pytest.raises(asyncio.CancelledError):
        await context.dead_letter(record(b"{}"), "reason")


async def test_an_unanticipated_failure_dead_letters_the_record_without_its_message(
    context: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead: list[tuple[Any, str]] = []

    async def dead_letter(record: Any, reason: str) -> None:
        dead.append((record, reason))

    monkeypatch.setattr(context, "dead_letter", dead_letter)
    failing = record(b"{}")

    async def handle(_record: Any) -> None:
        raise KeyError("sbx_rt_secret_value")

    await context.guarded(failing, handle)
    assert dead == [(failing, "processing error: KeyError")]


async def test_a_failing_handler_of_a_nested_record_ends_in_a_dead_letter(
    context: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = Broker()
    monkeypatch.setattr(context, "send", broker)

    async def handle(_record: Any) -> None:
        raise RuntimeError("bug")

    await within(10, context.guarded(record(b"[" * 200_000), handle))
    assert broker.letter().reason == "processing error: RuntimeError"


async def test_cancellation_is_not_a_failure(context: WorkerContext, monkeypatch: pytest.MonkeyPatch) -> None:
    async def dead_letter(record: Any, reason: str) -> None:
        raise AssertionError("a cancelled record must come back, not be dead-lettered")

    monkeypatch.setattr(context, "dead_letter", dead_letter)

    async def handle(_record: Any) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await context.guarded(SimpleNamespace(), handle)  # type: ignore[arg-type]


async def test_the_last_resort_sends_a_minimal_dead_letter(
    context: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = Broker()
    monkeypatch.setattr(context, "send", broker)
    await within(5, context.last_resort(record(b"[" * 2048), RuntimeError("sbx_at_secret")))
    letter = broker.letter()
    assert letter.value_omitted and letter.reason == "unhandled failure: RuntimeError" and letter.offset == 7


def _failing(*failures: BaseException) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    calls: list[int] = []

    async def work() -> str:
        calls.append(1)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return "done"

    return work, calls


def _postgres_error(sqlstate: str) -> DBAPIError:
    return DBAPIError("INSERT ...", {}, SimpleNamespace(sqlstate=sqlstate), connection_invalidated=False)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "permanent",
    [
        MessageSizeTooLargeError(),
        TopicAuthorizationFailedError(),
        IntegrityError("INSERT ...", {}, Exception("duplicate")),
        _postgres_error("22021"),  # a NUL byte in a text column: the record's, every time
        ValueError("bug"),
    ],
    ids=lambda exc: type(exc).__name__,
)
async def test_until_done_raises_what_retrying_cannot_fix(context: WorkerContext, permanent: Exception) -> None:
    work, calls = _failing(permanent)
    with pytest.raises(type(permanent)):
        await within(5, context.until_done(work, "storing"))
    assert len(calls) == 1


@pytest.mark.parametrize(
    "transient",
    [
        KafkaConnectionError(),
        KafkaTimeoutError(),
        OperationalError("SELECT 1", {}, Exception("server closed the connection")),
        _postgres_error("40001"),  # serialization failure
        _postgres_error("57P01"),  # admin shutdown
        ConnectionRefusedError(),
        TimeoutError(),
    ],
    ids=lambda exc: type(exc).__name__,
)
async def test_until_done_retries_transient_failures(context: WorkerContext, transient: Exception) -> None:
    work, calls = _failing(transient, transient)
    assert await within(5, context.until_done(work, "storing")) == "done"
    assert len(calls) == 3
