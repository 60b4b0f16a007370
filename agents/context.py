"""What every agent shares: the app, the service, topic handles and the dead-letter path."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import faust
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from faust.types import EventT, Message

from agents.batch_consumer import BatchConsumer
from schemas import DeadLetter, Event
from stream_app.backoff import Backoff
from stream_app.ingest import MAX_EVENT_BYTES
from stream_app.metrics import DEAD_LETTERS
from stream_app.publisher import KafkaPublisher, OutgoingRecord
from stream_app.sealed_letters import Headers, LetterSeal, readable_key
from stream_app.service import TokenService
from stream_app.settings import Settings
from stream_app.transient import is_transient

log = logging.getLogger(__name__)
T = TypeVar("T")

# A dead letter must fit the producer's max_request_size (aiokafka's default, 1 MiB, which the
# publisher keeps) and the broker's default max.message.bytes (1 MiB + 12), with room to spare.
MAX_DEAD_LETTER_BYTES = 1024 * 1024 - 32 * 1024
# What a minimal dead letter keeps of a key and a reason (both come from the input record).
MAX_KEY_BYTES = 1024
MAX_REASON_CHARS = 1024


class WorkerContext:
    def __init__(self, app: faust.App, service: TokenService) -> None:
        self.app = app
        self.service = service
        self.settings = service.settings
        self.topic_names = self.settings.topic_names()
        self.topics = {name: app.topic(configured) for name, configured in self.topic_names.items()}
        self.publisher = KafkaPublisher(self.settings)
        self.retry_backoff = Backoff(base=0.5, cap=30.0, jitter_ratio=0.3)
        self.letter_seal = _letter_seal(self.settings)
        self._stoppers: list[Callable[[], Awaitable[None]]] = []
        self.consumers: list[BatchConsumer] = []
        self.app.task(self._warm_up_publisher)

    async def _warm_up_publisher(self) -> None:
        """Best effort: a producer that fails to warm up starts on its first send instead."""
        try:
            async with asyncio.timeout(30):
                await self.publisher.warm_up(list(self.topic_names.values()))
        except Exception as exc:
            log.info("The producer did not warm up (%s); it starts on its first send", type(exc).__name__)

    def on_start(self, start: Callable[[], Awaitable[None]]) -> None:
        """Run ``start`` once the app has started, retried while the broker is away."""

        async def starting() -> None:
            await self.until_done(start, "starting a consumer")

        self.app.task(starting)

    def add_consumer(self, consumer: BatchConsumer) -> None:
        """An input topic's consumer: started with the app, stopped with the worker, and
        reported by the HTTP API (group joined, lag)."""
        self.consumers.append(consumer)
        self.on_start(consumer.start)
        self.on_stop(consumer.stop)

    def on_stop(self, stop: Callable[[], Awaitable[None]]) -> None:
        """Run ``stop`` when the worker stops, before the producer and the service close."""
        self._stoppers.append(stop)

    async def stop(self) -> None:
        for stop in self._stoppers:
            try:
                await stop()
            except Exception:  # the rest must still close; what was in flight comes back
                log.exception("Stopping failed")

    def topic(self, default_name: str) -> faust.TopicT:
        return self.topics[default_name]

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Send one record and wait for the broker's acknowledgement (acks=all, idempotent)."""
        await self.publisher.send(topic, key, value)

    async def publish(self, default_topic: str, event: Event) -> None:
        await self.send(self.topic_names[default_topic], event.key.encode(), event.to_bytes())

    async def publish_many(self, default_topic: str, events: Sequence[Event]) -> None:
        """Queue every event at once, in order, then wait for every acknowledgement."""
        topic = self.topic_names[default_topic]
        await self.publisher.send_many([OutgoingRecord(topic, e.key.encode(), e.to_bytes()) for e in events])

    async def dead_letter(self, event: EventT[bytes], reason: str) -> None:
        """Send the record to ``<topic>.dlq`` with its value sealed, its position and the reason.

        Never raises (but CancelledError): a value too large for a dead letter is left out; when
        the dead letter cannot be built (nothing to seal with, memory ...), or the broker refuses
        it for good, a minimal one goes instead (position, key if it can, reason). The key stays
        readable only in the service's own shape (``readable_key``). Only transient failures
        are retried, which holds the partition until the broker is back: the record is never
        dropped."""
        message = event.message
        try:
            letter = _full_dead_letter(message, reason, self.letter_seal)
        except Exception as exc:  # no key to seal with, memory ...: the record must still leave
            log.warning("Dead letter of %s[%d]@%d cannot be built (%s)", *_where(message), type(exc).__name__)
            await self._send_minimal(message, f"{reason} [record not copied: {type(exc).__name__}]", None)
        else:
            refusal = await self._send_unless_refused(f"{message.topic}.dlq", _dead_letter_key(message), letter)
            if refusal is not None:
                await self._send_minimal(message, f"{reason} [record not copied: {refusal}]", self.letter_seal)
        DEAD_LETTERS.labels(message.topic).inc()
        log.warning("Dead-lettered %s[%d]@%d: %s", *_where(message), reason)

    async def last_resort(self, event: EventT[bytes], exc: BaseException) -> None:
        """For a failure that escaped every other path (a bug): a minimal dead letter, no more."""
        message = event.message
        await self._send_minimal(message, f"unhandled failure: {type(exc).__name__}", None)
        DEAD_LETTERS.labels(message.topic).inc()
        log.error("Dead-lettered %s[%d]@%d after an unhandled %s", *_where(message), type(exc).__name__)

    async def _send_unless_refused(self, topic: str, key: bytes, value: bytes) -> str | None:
        """Send, retrying transient failures; the name of the error if it refused the record for good."""
        failures = 0
        while True:
            try:
                await self.send(topic, key, value)
                return None
            except Exception as exc:
                if not is_transient(exc):
                    log.warning("Sending a dead letter to %s refused (%s)", topic, type(exc).__name__)
                    return type(exc).__name__
                failures += 1
                await self._pause(failures, "sending a dead letter", exc)

    async def _send_minimal(self, message: Message, reason: str, seal: LetterSeal | None) -> None:
        """Send the minimal dead letter (its key sealed with ``seal`` if given), retrying whatever
        fails: a record of a few hundred bytes that cannot be sent could not be sent for any record
        (a topic missing or forbidden, a broken producer), so its failure is the infrastructure's
        and waiting is all there is."""
        letter = _minimal_dead_letter(message, reason, seal)
        failures = 0
        while True:
            try:
                await self.send(f"{message.topic}.dlq", _dead_letter_key(message), letter)
                return
            except Exception as exc:
                failures += 1
                await self._pause(failures, "sending a minimal dead letter", exc)

    async def guarded(self, record: EventT[bytes], handle: Callable[[EventT[bytes]], Awaitable[None]]) -> None:
        """Run ``handle`` on one record; a failure nobody anticipated dead-letters the record
        (with the exception's type only: its text could carry data) rather than losing it.
        Never raises but CancelledError."""
        try:
            await handle(record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("Unexpected failure processing %s[%d]@%d", *_where(record.message))
            try:
                await self.dead_letter(record, f"processing error: {type(exc).__name__}")
            except Exception as again:  # dead_letter does not raise; should it ever, still no loss
                await self.last_resort(record, again)

    async def until_done(self, work: Callable[[], Awaitable[T]], what: str) -> T:
        """Run ``work``, retrying on transient infrastructure failures until it succeeds (Faust
        acks a message whose agent raised, so giving up on those would drop it). Any other
        failure is raised at once: retrying would only block the partition behind it."""
        failures = 0
        while True:
            try:
                return await work()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                failures += 1
                await self._pause(failures, what, exc)

    async def _pause(self, failures: int, what: str, exc: BaseException) -> None:
        delay = self.retry_backoff.delay(min(failures, 8))
        log.warning("%s failed (%s); retrying in %.1fs", what, type(exc).__name__, delay)
        await asyncio.sleep(delay)


def _letter_seal(settings: Settings) -> LetterSeal | None:
    """What seals dead-lettered values; None (dead letters then keep no value) if the keys are unusable."""
    try:
        return LetterSeal.from_settings(settings)
    except Exception as exc:
        log.error("Dead letters will not keep their values: no key to seal them (%s)", type(exc).__name__)
        return None


def _full_dead_letter(message: Message, reason: str, seal: LetterSeal | None) -> bytes:
    """The dead letter with the record's value and headers sealed, or without them when the value
    is over the input limit or the dead letter would be too large to send. Raises when it cannot seal."""
    if seal is None:
        raise ValueError("no key to seal the value with")
    original = message.value or b""
    envelope = {
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "reason": reason,
        "value_size": len(original),
        "sealed_key_id": seal.key_id,
        **_key_fields(message, seal),
    }
    key = _dead_letter_key(message)
    if len(original) <= MAX_EVENT_BYTES:
        letter = DeadLetter(
            **envelope,
            sealed_value=seal.seal(original, *_where(message)).sealed_base64,
            sealed_headers=seal.seal_headers(_headers(message), *_where(message)),
        ).to_bytes()
        if _fits(key, letter):
            return letter
    letter = DeadLetter(**envelope, value_omitted=True).to_bytes()
    if not _fits(key, letter):
        raise ValueError("dead letter too large even without the value")
    return letter


def _headers(message: Message) -> Headers:
    """The record's headers in order, repeated names kept (Faust passes aiokafka's pairs)."""
    headers = getattr(message, "headers", None) or []
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(name), value.encode() if isinstance(value, str) else value) for name, value in pairs]


def _minimal_dead_letter(message: Message, reason: str, seal: LetterSeal | None) -> bytes:
    """Position, key (sealed if ``seal`` can and the key is not huge), reason, no value nor
    headers: small whatever the record was."""
    raw = _raw_key(message)
    fields: dict[str, Any] = {"key": readable_key(raw), "key_size": None if raw is None else len(raw)}
    if seal is not None and raw is not None and len(raw) <= MAX_KEY_BYTES:
        try:
            fields = _key_fields(message, seal) | {"sealed_key_id": seal.key_id}
        except Exception as exc:  # the letter must still go: its record is read back from the topic
            log.warning("The key of %s[%d]@%d cannot be sealed (%s)", *_where(message), type(exc).__name__)
    return DeadLetter(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        reason=_safe_text(reason[:MAX_REASON_CHARS]),
        value_size=len(message.value) if isinstance(message.value, bytes) else 0,
        value_omitted=True,
        **fields,
    ).to_bytes()


def _key_fields(message: Message, seal: LetterSeal) -> dict[str, Any]:
    """The record's key as a dead letter keeps it: readable only in the service's own shape,
    sealed in any case (a replay re-sends the original), with its size."""
    raw = _raw_key(message)
    if raw is None:
        return {"key": None}
    sealed = seal.seal_key(raw, *_where(message))
    return {"key": readable_key(raw), "key_size": len(raw), "sealed_key": sealed}


def _dead_letter_key(message: Message) -> bytes:
    """The record's key in the service's own shape (a connection's dead letters stay in order on
    its partition); any other key could be a token: those letters go under the empty key."""
    key = readable_key(_raw_key(message))
    return key.encode() if key is not None else b""


def _raw_key(message: Message) -> bytes | None:
    key = message.key
    if key is None or isinstance(key, bytes):
        return key
    return str(key).encode("utf-8", errors="surrogatepass")


def _fits(key: bytes, value: bytes) -> bool:
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, [])
    return size <= MAX_DEAD_LETTER_BYTES


def _where(message: Message) -> tuple[str, int, int]:
    return message.topic, message.partition, message.offset


def _safe_text(text: str) -> str:
    """``text`` without what JSON cannot carry (lone surrogates)."""
    return text.encode("utf-8", errors="replace").decode("utf-8")
