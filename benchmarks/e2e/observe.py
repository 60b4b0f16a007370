"""Reading outcomes and their timestamps back from the topics (the burst is published with
chaoskit's ``publish``).

Times come from the records' own timestamps (the producer's clock, this machine's), so the
end of a run is the moment its last ``token.refreshed`` was produced, not when we polled it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer

from .borrowed import partitions_of


class NotAllRefreshed(RuntimeError):
    pass


class Outcomes:
    """Follows the outcome topics of one run from their beginning (they are the run's own)."""

    def __init__(
        self,
        bootstrap: str,
        refreshed: str,
        others: list[str],
        final: list[str],
        alive: Callable[[], bool] = lambda: True,
    ) -> None:
        self.bootstrap = bootstrap
        self.refreshed_topic = refreshed
        self.other_topics = others
        self.final_topics = final
        self.alive = alive
        self.refreshed: dict[str, int] = {}  # connection key -> first token.refreshed timestamp (ms)
        self.others: dict[str, int] = {}  # topic -> records (needs_reauth, refresh_failed)
        self.consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        topics = [self.refreshed_topic, *self.other_topics, *self.final_topics]
        partitions = await partitions_of(self.bootstrap, topics)
        # earliest, as the seek below: a "latest" initial reset can land after it (aiokafka).
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await self.consumer.start()
        self.consumer.assign(partitions)
        await self.consumer.seek_to_beginning(*partitions)

    async def wait_for(self, keys: set[str], within: float) -> dict[str, int]:
        if self.consumer is None:
            raise RuntimeError("Outcomes.start() first")
        deadline = time.monotonic() + within
        while not keys <= self.refreshed.keys():
            final = {topic: self.others[topic] for topic in self.final_topics if self.others.get(topic)}
            if final or not self.alive():  # those connections will never be refreshed: stop now
                why = f"final outcomes {final}" if final else "a worker process exited"
                raise NotAllRefreshed(f"{why}; the workers' logs say why; other outcomes: {self.others}")
            if time.monotonic() > deadline:
                missing = len(keys - self.refreshed.keys())
                raise NotAllRefreshed(
                    f"{missing} of {len(keys)} connections not refreshed within {within:.0f}s; other outcomes: "
                    f"{self.others}"
                )
            batches = await self.consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, records in batches.items():
                for record in records:
                    if tp.topic != self.refreshed_topic:
                        self.others[tp.topic] = self.others.get(tp.topic, 0) + 1
                    elif record.key is not None:
                        self.refreshed.setdefault(record.key.decode(), record.timestamp)
        return {key: self.refreshed[key] for key in keys}

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()


async def first_timestamps(bootstrap: str, topic: str, expected: int, patience: float = 15.0) -> dict[str, int]:
    """Connection key -> timestamp (ms) of its first record on ``topic``; read again until
    ``expected`` keys are there or ``patience`` seconds passed (a record acknowledged late)."""
    deadline = time.monotonic() + patience
    while True:
        found = await _first_timestamps(bootstrap, topic)
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        await asyncio.sleep(1)


async def _first_timestamps(bootstrap: str, topic: str) -> dict[str, int]:
    partitions = await partitions_of(bootstrap, [topic])
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    found: dict[str, int] = {}
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        remaining = {tp for tp, end in ends.items() if end > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=5000)
            for records in batches.values():
                for record in records:
                    if record.key is not None:
                        found.setdefault(record.key.decode(), record.timestamp)
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return found
