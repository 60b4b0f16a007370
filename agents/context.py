"""What every agent shares: the app, the service, topic handles and the dead-letter path."""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import faust
from aiokafka.errors import KafkaError
from faust.types import EventT
from sqlalchemy.exc import DBAPIError

from schemas import DeadLetter, Event
from stream_app.backoff import Backoff
from stream_app.ingest import MAX_EVENT_BYTES, redact_plaintext_tokens
from stream_app.metrics import DEAD_LETTERS
from stream_app.publisher import KafkaPublisher
from stream_app.service import TokenService

log = logging.getLogger(__name__)
T = TypeVar("T")

# Failures of the infrastructure, not of the message: wait and try the same message again
# (a broker that cannot take a dead letter holds the partition rather than lose the record).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (DBAPIError, KafkaError, OSError, asyncio.TimeoutError)


class WorkerContext:
    def __init__(self, app: faust.App, service: TokenService) -> None:
        self.app = app
        self.service = service
        self.settings = service.settings
        self.topic_names = self.settings.topic_names()
        self.topics = {name: app.topic(configured) for name, configured in self.topic_names.items()}
        self.publisher = KafkaPublisher(self.settings)
        self._backoff = Backoff(base=0.5, cap=30.0, jitter_ratio=0.3)

    def topic(self, default_name: str) -> faust.TopicT:
        return self.topics[default_name]

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Send one record and wait for the broker's acknowledgement (acks=all, idempotent)."""
        await self.publisher.send(topic, key, value)

    async def publish(self, default_topic: str, event: Event) -> None:
        await self.send(self.topic_names[default_topic], event.key.encode(), event.to_bytes())

    async def dead_letter(self, event: EventT[bytes], reason: str) -> None:
        message = event.message
        original = message.value or b""
        omitted = len(original) > MAX_EVENT_BYTES
        value, redacted = (b"", False) if omitted else redact_plaintext_tokens(original)
        record = DeadLetter(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=_text(message.key),
            value_base64=base64.b64encode(value).decode(),
            reason=reason,
            redacted=redacted,
            value_size=len(original),
            value_omitted=omitted,
        )
        await self.until_done(
            functools.partial(self.send, f"{message.topic}.dlq", message.key or b"", record.to_bytes()),
            "dead-lettering a record",
        )
        DEAD_LETTERS.labels(message.topic).inc()
        log.warning("Dead-lettered %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason)

    async def guarded(self, record: EventT[bytes], handle: Callable[[EventT[bytes]], Awaitable[None]]) -> None:
        """Run ``handle`` on one record; a failure nobody anticipated dead-letters the record
        (with the exception's type only: its text could carry data) rather than losing it."""
        try:
            await handle(record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("Unexpected failure processing %s[%d]@%d", *_position(record))
            await self.dead_letter(record, f"processing error: {type(exc).__name__}")

    async def until_done(self, work: Callable[[], Awaitable[T]], what: str) -> T:
        """Run ``work``, retrying on infrastructure failures until it succeeds: Faust acks a
        message whose agent raised, so giving up here would silently drop it."""
        failures = 0
        while True:
            try:
                return await work()
            except TRANSIENT_ERRORS as exc:
                failures += 1
                delay = self._backoff.delay(min(failures, 8))
                log.warning("%s failed (%s); retrying in %.1fs", what, type(exc).__name__, delay)
                await asyncio.sleep(delay)


def _position(record: EventT[bytes]) -> tuple[str, int, int]:
    return record.message.topic, record.message.partition, record.message.offset


def _text(key: Any) -> str | None:
    if key is None:
        return None
    if isinstance(key, bytes):
        return key.decode("utf-8", errors="replace")
    return str(key)
