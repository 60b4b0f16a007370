"""Reading a topic back over a time range, for audits (``token-refresh replay``).

Reads without a consumer group (no offsets are committed, nobody's positions move), partition
by partition in offset order, from the first record at or after ``since`` (the broker's time
index) up to the end offsets at the start, or the first record after ``until``. With
``follow``, every partition is then read on for new records until ``stop`` is set
(SIGINT/SIGTERM in the CLI). What each record shows: stream_app/replay_view.py.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from stream_app.cli_kafka import kafka_failures_as_one_line
from stream_app.kafka_client import DLQ_SUFFIX, cap_client_logging, client_options, existing_partitions
from stream_app.replay_view import RecordFilter, RecordView, view_record
from stream_app.sealed_letters import LetterSeal
from stream_app.settings import Settings

_POLL_MS = 250  # how soon a stop request is noticed while following


@dataclass(frozen=True)
class ReplayRange:
    since: datetime | None  # None: from the beginning
    until: datetime | None = None  # inclusive; None: the end offsets at the start
    follow: bool = False


async def replay_topic(
    settings: Settings,
    topic: str,
    span: ReplayRange,
    keep: RecordFilter,
    emit: Callable[[list[RecordView]], object],
    stop: asyncio.Event | None = None,
) -> int:
    """Emit the views of ``topic``'s records in ``span`` that ``keep`` keeps, a batch at a time;
    the number emitted. Raises TokenRefreshError (one line) for a missing topic or a broker
    that cannot be reached."""
    cap_client_logging()
    seal = LetterSeal.from_settings(settings) if topic.endswith(DLQ_SUFFIX) else None
    stop = stop or asyncio.Event()
    async with kafka_failures_as_one_line(settings, f"reading {topic!r}"):
        partitions = (await existing_partitions(settings, topic))[topic]
        # earliest, as the seek below means: an initial reset to the latest offset can land
        # after a seek to the beginning (aiokafka), which skips every record.
        consumer = AIOKafkaConsumer(
            group_id=None, enable_auto_commit=False, auto_offset_reset="earliest", **client_options(settings)
        )
        try:
            await consumer.start()
            consumer.assign(partitions)
            ends = await _ends(consumer, partitions, span.until)
            await _seek(consumer, partitions, span.since)
            reader = _Reader(span, keep, seal, emit)
            for tp in partitions:
                while not stop.is_set() and await consumer.position(tp) < ends[tp]:
                    batch = (await consumer.getmany(tp, timeout_ms=_POLL_MS)).get(tp, [])
                    reader.take([record for record in batch if record.offset < ends[tp]])
            while span.follow and not stop.is_set():
                for records in (await consumer.getmany(timeout_ms=_POLL_MS)).values():
                    reader.take(records)
            return reader.emitted
        finally:
            await consumer.stop()


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (a follow ends on either, exit 0); call it in the loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


class _Reader:
    def __init__(
        self, span: ReplayRange, keep: RecordFilter, seal: LetterSeal | None, emit: Callable[[list[RecordView]], object]
    ) -> None:
        self._since = _milliseconds(span.since)
        self._until = _milliseconds(span.until)
        self._keep = keep
        self._seal = seal
        self._emit = emit
        self.emitted = 0

    def take(self, records: list[ConsumerRecord]) -> None:
        # The time index finds where the range starts and ends; a producer's own timestamps may
        # be out of order around those points, so each record is checked as well.
        in_range = (
            record
            for record in records
            if (self._since is None or record.timestamp >= self._since)
            and (self._until is None or record.timestamp <= self._until)
        )
        views = [view for view in (view_record(record, self._seal) for record in in_range) if self._keep.keeps(view)]
        if views:
            self.emitted += len(views)
            self._emit(views)


def _milliseconds(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


async def _ends(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], until: datetime | None
) -> dict[TopicPartition, int]:
    """Each partition's end offset now, or that of the first record later than ``until``."""
    ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    if until is None:
        return ends
    after = int((until + timedelta(milliseconds=1)).timestamp() * 1000)
    found = await consumer.offsets_for_times({tp: after for tp in partitions})
    return {tp: min(ends[tp], found[tp].offset) if found.get(tp) is not None else ends[tp] for tp in partitions}


async def _seek(consumer: AIOKafkaConsumer, partitions: list[TopicPartition], since: datetime | None) -> None:
    if since is None:
        await consumer.seek_to_beginning(*partitions)
        return
    offsets = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in partitions})
    for tp in partitions:
        found = offsets.get(tp)
        # Nothing at or after ``since``: start at the end (a follow waits there).
        consumer.seek(tp, found.offset if found is not None else (await consumer.end_offsets([tp]))[tp])
