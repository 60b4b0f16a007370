"""The one producer for everything the service publishes: acks=all, idempotent."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer

from stream_app.kafka_client import idempotent_producer
from stream_app.settings import Settings


class OutgoingRecord(NamedTuple):
    topic: str
    key: bytes
    value: bytes


class KafkaPublisher:
    """Started on first use (agents may publish before Faust starts user services)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is None:
                producer = idempotent_producer(self._settings, linger_ms=5)
                await producer.start()
                self._producer = producer
        return self._producer

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Send one record and return once every in-sync replica has it."""
        producer = await self._started()
        await producer.send_and_wait(topic, value, key=key)

    async def send_many(self, records: Sequence[OutgoingRecord]) -> None:
        """Send records in their order and return once every in-sync replica has all of them;
        raises if any of them failed (some of the others may have been delivered).

        Each record enters the producer's queue before the next one does, so records of one
        key (one partition) reach the topic in this order: the producer keeps one batch per
        partition in flight and, being idempotent, retries without reordering."""
        producer = await self._started()
        deliveries: list[asyncio.Future[Any]] = []
        try:
            for topic, key, value in records:
                deliveries.append(await producer.send(topic, value, key=key))
        finally:
            # Even when queueing failed part-way, wait for what was queued: no delivery is left
            # unobserved, and the caller's retry does not race the first attempt.
            outcomes = await asyncio.gather(*deliveries, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
