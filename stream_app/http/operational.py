"""The figures an operator alerts on, gathered for /metrics and the dashboard: connections by
platform and status, the outbox backlog, dead letters (from the database and the broker, at
most every OPERATIONAL_GAUGES_MAX_AGE seconds: every worker of a group is scraped), and the
worker's own (consumer lag, circuits, spool) at each call."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from sqlalchemy import func, select

from stream_app.clock import utc_now
from stream_app.db import Database
from stream_app.db.models import ConnectionRow, OutboxRow
from stream_app.http.probe import WorkerProbe
from stream_app.kafka_client import DLQ_SUFFIX, INPUT_TOPICS, record_counts
from stream_app.metrics import (
    CIRCUIT_STATE,
    CONNECTIONS,
    CONSUMER_GROUP_JOINED,
    CONSUMER_LAG,
    DEAD_LETTER_RECORDS,
    OUTBOX_OLDEST_AGE,
    OUTBOX_UNPUBLISHED,
    SPOOLED_TOKENS,
)
from stream_app.settings import Settings

log = logging.getLogger(__name__)

OPERATIONAL_GAUGES_MAX_AGE = 15.0
BROKER_ANSWER_SECONDS = 5.0
CIRCUIT_STATES = ("closed", "open", "half_open")


@dataclass
class StoredFigures:
    connections: dict[tuple[str, str], int] = field(default_factory=dict)
    outbox_unpublished: int = 0
    outbox_oldest_age_seconds: float = 0.0
    dead_letters: dict[str, int] = field(default_factory=dict)


class OperationalFigures:
    def __init__(self, settings: Settings, database: Database, probe: WorkerProbe | None) -> None:
        self._settings = settings
        self._database = database
        self._probe = probe
        self._stored = StoredFigures()
        self._gathered_at = float("-inf")
        self._lock = asyncio.Lock()

    def dead_letter_topics(self) -> list[str]:
        return [self._settings.topic_names()[name] + DLQ_SUFFIX for name in INPUT_TOPICS]

    async def stored(self) -> StoredFigures:
        """The database's and the broker's figures, gathered again when older than the max age."""
        async with self._lock:
            if time.monotonic() - self._gathered_at >= OPERATIONAL_GAUGES_MAX_AGE:
                self._stored = await self._gather()
                self._gathered_at = time.monotonic()
            return self._stored

    async def _gather(self) -> StoredFigures:
        figures = StoredFigures()
        async with self._database.sessions() as session:
            rows = await session.execute(
                select(ConnectionRow.platform, ConnectionRow.status, func.count()).group_by(
                    ConnectionRow.platform, ConnectionRow.status
                )
            )
            figures.connections = {(platform, status or "connected"): count for platform, status, count in rows}
            backlog, oldest = (
                await session.execute(
                    select(func.count(), func.min(OutboxRow.created_at)).where(OutboxRow.published_at.is_(None))
                )
            ).one()
        figures.outbox_unpublished = backlog
        figures.outbox_oldest_age_seconds = max(0.0, (utc_now() - oldest).total_seconds()) if oldest else 0.0
        try:
            async with asyncio.timeout(BROKER_ANSWER_SECONDS):
                figures.dead_letters = await record_counts(self._settings, self.dead_letter_topics())
        except Exception as exc:  # the broker away: the dead-letter figures are left out this round
            log.warning("Counting dead letters failed (%s)", type(exc).__name__)
            figures.dead_letters = self._stored.dead_letters
        return figures

    async def set_gauges(self) -> None:
        """Bring every operational gauge up to date (the /metrics handler, before rendering)."""
        try:
            stored = await self.stored()
        except Exception as exc:  # the database away: /readyz says so; the worker's own figures still go out
            log.warning("Gathering the stored figures failed (%s)", type(exc).__name__)
        else:
            CONNECTIONS.clear()
            for (platform, status), count in stored.connections.items():
                CONNECTIONS.labels(platform, status).set(count)
            OUTBOX_UNPUBLISHED.set(stored.outbox_unpublished)
            OUTBOX_OLDEST_AGE.set(stored.outbox_oldest_age_seconds)
            for topic, count in stored.dead_letters.items():
                DEAD_LETTER_RECORDS.labels(topic).set(count)
        if self._probe is None:
            return
        for group, joined in self._probe.consumer_groups().items():
            CONSUMER_GROUP_JOINED.labels(group).set(1 if joined else 0)
        CONSUMER_LAG.clear()  # partitions move between workers
        for (topic, partition), lag in (await self._probe.partition_lag()).items():
            CONSUMER_LAG.labels(topic, str(partition)).set(lag)
        for platform, state in self._probe.circuit_states().items():
            for candidate in CIRCUIT_STATES:
                CIRCUIT_STATE.labels(platform, candidate).set(1 if state == candidate else 0)
        SPOOLED_TOKENS.set(self._probe.spooled_tokens())
