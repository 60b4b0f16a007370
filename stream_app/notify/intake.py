"""Intake: read the outcome topics, record one delivery per (notice, channel) in the store, and
only then commit the offsets (a crash in between re-reads the batch; the dedupe key makes the
re-read a no-op). A record the notifier cannot read goes to its dead-letter topic."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas import (
    Event,
    ProviderCircuitChanged,
    TokenNeedsReauth,
    TokenRefreshed,
    TokenRefreshFailed,
    TokenRevoked,
)
from stream_app.notify.channel import Channel, Route
from stream_app.notify.dead_letters import DeadLetters
from stream_app.notify.kafka import client_options
from stream_app.notify.metrics import NotifyMetrics
from stream_app.notify.notice import Notice, NoticeKind, recovered_notice_id
from stream_app.notify.policy import DeliveryPolicy
from stream_app.notify.recovery import Ledger
from stream_app.notify.settings import NotifySettings
from stream_app.notify.store import DROPPED, PENDING, SUPPRESSED, Store, utc_now

log = logging.getLogger(__name__)

_MODELS: dict[str, type[BaseModel]] = {
    "token.refreshed": TokenRefreshed,
    "token.needs_reauth": TokenNeedsReauth,
    "token.refresh_failed": TokenRefreshFailed,
    "token.revoked": TokenRevoked,
    "provider.circuit_changed": ProviderCircuitChanged,
    # Only a re-connection's signal: its envelope is read, its ciphertexts are never kept.
    "connection.created": Event,
}


class Malformed(Exception):
    pass


@dataclass(frozen=True)
class Received:
    """What one record says: its notice, whether it tells of a problem, and whether it shows
    the connection recovered or revoked."""

    notice: Notice
    problem: bool
    recovers: bool
    revokes: bool
    told: bool = True  # False: only a signal (connection.created), not a notice for channels


def read_record(default_topic: str, value: bytes | None) -> Received:
    """The meaning of one record of ``default_topic`` (its contract name); Malformed if none."""
    if value is None:
        raise Malformed("no value (a tombstone)")
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Malformed(f"not JSON: {type(exc).__name__} at position {getattr(exc, 'pos', '?')}") from None
    except RecursionError:
        raise Malformed("not JSON this notifier reads: nested too deeply") from None
    if not isinstance(data, dict):
        raise Malformed(f"not a JSON object but {type(data).__name__}")
    try:
        event = _MODELS[default_topic].model_validate(data)
    except RecursionError:
        raise Malformed(f"not a {default_topic} event: nested too deeply") from None
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "event"
        raise Malformed(f"not a {default_topic} event: {where}: {first['msg']}") from None
    if isinstance(event, ProviderCircuitChanged):
        kind: NoticeKind = "circuit_opened" if event.state == "open" else "circuit_closed"
        return Received(_notice(event, kind, None), problem=False, recovers=False, revokes=False)
    if not isinstance(event, Event):
        raise Malformed(f"not a {default_topic} event")
    if default_topic == "connection.created":
        if event.event_type != "connection.created":
            raise Malformed("not a connection.created event: event_type: another event's type")  # not quoted
        # Read as the bare envelope (Event ignores the rest): its ciphertexts are never kept.
        notice = _notice(event, "refreshed", event.user_id)
        return Received(notice, problem=False, recovers=True, revokes=False, told=False)
    if isinstance(event, TokenRefreshed):
        return Received(_notice(event, "refreshed", event.user_id), problem=False, recovers=True, revokes=False)
    if isinstance(event, TokenNeedsReauth):
        return Received(_notice(event, "needs_reauth", event.user_id), problem=True, recovers=False, revokes=False)
    if isinstance(event, TokenRefreshFailed):
        problem = not event.will_retry
        return Received(_notice(event, "refresh_failed", event.user_id), problem=problem, recovers=False, revokes=False)
    if isinstance(event, TokenRevoked):
        return Received(_notice(event, "revoked", event.user_id), problem=False, recovers=False, revokes=True)
    raise Malformed(f"not a {default_topic} event")


def _notice(event: Any, kind: NoticeKind, user_id: Any) -> Notice:
    return Notice(
        notice_id=event.event_id,
        kind=kind,
        platform=event.platform,
        user_id=user_id,
        occurred_at=event.occurred_at,
        event=event.model_dump(mode="json"),
    )


def delivery_row(
    notice: Notice, *, channel: str, route: Route, problem: bool, status: str, next_attempt_at: datetime, now: datetime
) -> dict[str, Any]:
    return {
        "notice_id": notice.notice_id,
        "channel": channel,
        "kind": notice.kind,
        "platform": notice.platform,
        "user_id": notice.user_id,
        "occurred_at": notice.occurred_at,
        "event": dict(notice.event),
        "route": route.value,
        "problem": problem,
        "status": status,
        "attempts": 0,
        "next_attempt_at": next_attempt_at,
        "created_at": now,
    }


@dataclass
class BatchOutcome:
    accepted: Counter[str]
    deduplicated: Counter[str]
    suppressed: Counter[str]
    dropped: Counter[str]


class Intake:
    def __init__(
        self,
        settings: NotifySettings,
        store: Store,
        channels: Sequence[Channel],
        policy: DeliveryPolicy,
        metrics: NotifyMetrics,
        dead_letters: DeadLetters,
        on_new: Callable[[set[str]], None] = lambda _channels: None,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self._settings, self._store, self._policy, self._metrics = settings, store, policy, metrics
        self._channels = {channel.name: channel for channel in channels}
        self._dead_letters, self._on_new, self._now = dead_letters, on_new, now
        self._skew = timedelta(seconds=settings.event_max_clock_skew_seconds)
        # Configured topic name -> the contract's name (which decides how it is read).
        self._topics = {configured: default for default, configured in settings.topic_names().items()}
        self.consumer = AIOKafkaConsumer(
            *self._topics,
            group_id=settings.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset=settings.notify_offset_reset,
            session_timeout_ms=int(settings.kafka_session_timeout_seconds * 1000),
            **client_options(settings),
        )
        self.started = False

    async def start(self) -> None:
        await self.consumer.start()
        self.started = True

    async def stop(self) -> None:
        self.started = False
        await self.consumer.stop()

    async def process(self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]]) -> None:
        received: list[Received] = []
        malformed: list[tuple[ConsumerRecord[bytes, bytes], str]] = []
        for records in batch.values():
            for record in records:
                try:
                    received.append(read_record(self._topics[record.topic], record.value))
                except Malformed as exc:
                    malformed.append((record, str(exc)))
        # A connection's events come from several topics: applied in the order they happened.
        received.sort(key=lambda item: item.notice.occurred_at)
        now = self._now()
        outcome = BatchOutcome(Counter(), Counter(), Counter(), Counter())
        if self._channels:  # none configured: nothing to record
            async with self._store.begin() as connection:
                await self._take_in(connection, received, now, outcome)
        for record, reason in malformed:  # after the store commit, before the offsets
            await self._dead_letters.record(
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                key=record.key,
                size=0 if record.value is None else len(record.value),
                reason=reason,
            )
            self._metrics.malformed.labels(topic=record.topic).inc()
        await self.consumer.commit({partition: records[-1].offset + 1 for partition, records in batch.items()})
        self._count(outcome)
        if outcome.accepted:
            self._on_new(set(outcome.accepted))

    def _count(self, outcome: BatchOutcome) -> None:
        for counter, metric in (
            (outcome.accepted, self._metrics.accepted),
            (outcome.deduplicated, self._metrics.deduplicated),
            (outcome.suppressed, self._metrics.suppressed),
            (outcome.dropped, self._metrics.dropped),
        ):
            for channel, count in counter.items():
                metric.labels(channel=channel).inc(count)

    async def _take_in(
        self, connection: AsyncConnection, received: Sequence[Received], now: datetime, outcome: BatchOutcome
    ) -> None:
        """Record the batch's deliveries: its connections' ledger read once, each event applied to
        it in order, the changes and the new rows written at the end."""
        interval = self._policy.reauth_interval
        connections = {(item.notice.user_id, item.notice.platform) for item in received if item.notice.user_id}
        reauth_times = [item.notice.occurred_at for item in received if item.notice.kind == "needs_reauth"]
        window = (min(reauth_times) - interval, max(reauth_times) + interval) if reauth_times and interval else None
        ledger = await self._store.load_ledger(connection, connections, window)
        rows: list[dict[str, Any]] = []
        for item in received:
            if item.notice.kind in ("circuit_opened", "circuit_closed"):
                item = await self._circuit_scope(connection, item)
            rows.extend(self._plan(ledger, item, now))
        outcome.dropped.update(await self._store.write_ledger(connection, ledger))
        inserted = await self._store.insert_deliveries(connection, rows)
        for row in rows:
            key = (row["notice_id"], row["channel"])
            if key not in inserted:
                outcome.deduplicated[row["channel"]] += 1
                continue
            inserted.discard(key)  # the same key again in this batch: a duplicate
            if row["status"] == SUPPRESSED:
                outcome.suppressed[row["channel"]] += 1
            elif row["status"] == DROPPED:
                outcome.dropped[row["channel"]] += 1
            else:
                outcome.accepted[row["channel"]] += 1

    async def _circuit_scope(self, connection: AsyncConnection, item: Received) -> Received:
        """A worker's circuit change, marked platform-wide when it opens the platform's first
        circuit or closes its last one (circuits are per worker; an outage is the platform's)."""
        notice = item.notice
        platform_wide = await self._store.circuit_changed(
            connection,
            platform=notice.platform,
            worker=str(notice.event.get("worker", "")),
            opened=notice.kind == "circuit_opened",
            at=notice.occurred_at,
        )
        return replace(item, notice=replace(notice, platform_wide=platform_wide))

    def _plan(self, ledger: Ledger, item: Received, now: datetime) -> list[dict[str, Any]]:
        """The delivery rows of one event, its effects on the connection recorded in ``ledger``."""
        notice = item.notice
        planned: list[tuple[Notice, Channel, Route, bool]] = []
        connection = (notice.user_id, notice.platform) if notice.user_id is not None else None
        if connection is not None and (item.recovers or item.revokes) and notice.occurred_at > now + self._skew:
            log.warning(
                "notify: event %s is dated %s, past this notifier's clock: not taken as a recovery",
                notice.notice_id,
                notice.occurred_at.isoformat(),
            )
        elif connection is not None and item.recovers:
            recovered = Notice(
                notice_id=recovered_notice_id(notice.notice_id),
                kind="recovered",
                platform=notice.platform,
                user_id=notice.user_id,
                occurred_at=notice.occurred_at,
                event=notice.event,
            )
            for name in sorted(ledger.recover(connection, notice.occurred_at)):
                channel = self._channels.get(name)  # None: no longer configured
                route = channel.route(recovered) if channel is not None else Route.SKIP
                if channel is not None and route is not Route.SKIP:
                    planned.append((recovered, channel, route, False))
        elif connection is not None and item.revokes:
            ledger.revoke(connection, notice.occurred_at)
        if item.told:
            for channel in self._channels.values():
                route = channel.route(notice)
                if route is not Route.SKIP:
                    planned.append((notice, channel, route, item.problem))
        rows = []
        interval = self._policy.reauth_interval
        for planned_notice, channel, route, problem in planned:
            status = PENDING
            if problem and connection is not None and ledger.stale(connection, planned_notice.occurred_at):
                status = DROPPED  # read after the connection's recovery (another topic, behind)
            elif (
                connection is not None
                and planned_notice.kind == "needs_reauth"
                and channel.user_facing
                and interval
                and ledger.reauth_limited(connection, channel.name, planned_notice.occurred_at, interval)
            ):
                status = SUPPRESSED
            row = delivery_row(
                planned_notice,
                channel=channel.name,
                route=route,
                problem=problem,
                status=status,
                next_attempt_at=self._policy.not_before(now, user_facing=channel.user_facing),
                now=now,
            )
            if connection is not None:
                ledger.taken_in(connection, row)
            rows.append(row)
        return rows
