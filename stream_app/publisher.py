"""The one producer for everything the service publishes: acks=all, idempotent."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from stream_app.kafka_client import idempotent_producer
from stream_app.settings import Settings


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

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
