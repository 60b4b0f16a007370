"""The notifier's process (``token-refresh notify``): intake, one dispatcher per channel, probes
and metrics, housekeeping; it runs until SIGTERM or SIGINT, then stops reading, hands back the
deliveries it claimed but did not start, and lets the sends in flight finish."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
)
from sqlalchemy.exc import SQLAlchemyError

from stream_app.notify.channel import Channel
from stream_app.notify.channels import load_channels
from stream_app.notify.dead_letters import DeadLetters
from stream_app.notify.dispatch import ChannelDispatcher
from stream_app.notify.http import HttpServer, create_app
from stream_app.notify.intake import Intake
from stream_app.notify.kafka import dead_letter_producer, ensure_dead_letter_topic
from stream_app.notify.metrics import NotifyMetrics
from stream_app.notify.outage_log import OutageLog
from stream_app.notify.policy import DeliveryPolicy, QuietHours
from stream_app.notify.settings import NotifyConfigurationError, NotifySettings
from stream_app.notify.store import SchemaTooNew, Store, utc_now

log = logging.getLogger(__name__)

_GAUGE_INTERVAL_SECONDS = 5.0  # at most (NOTIFY_POLL_INTERVAL_SECONDS x 20 when shorter)
_PRUNE_INTERVAL_SECONDS = 3600.0
_RETRY_BATCH_MAX_SECONDS = 5.0  # a batch that failed is read again after 0.2 s, 0.4 s ... up to this
# A broker that refuses the notifier's principal: its ACLs are missing (a setting, not a fault to retry).
_KAFKA_REFUSALS = (TopicAuthorizationFailedError, GroupAuthorizationFailedError, ClusterAuthorizationFailedError)


class Notifier:
    def __init__(
        self,
        settings: NotifySettings,
        channels: Sequence[Channel],
        *,
        now: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
    ) -> None:
        self.settings, self.channels, self._now, self._rng = settings, list(channels), now, rng
        self.metrics = NotifyMetrics()
        self.metrics.declare([channel.name for channel in self.channels])
        self.store = Store(settings.database_url.get_secret_value())
        bounds = settings.quiet_hours()
        quiet = QuietHours(*bounds, zone=settings.notify_quiet_hours_timezone) if bounds else None
        self.policy = DeliveryPolicy(quiet, settings.notify_reauth_notice_interval_hours)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.intake: Intake | None = None
        self.http: HttpServer | None = None
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def ready(self) -> str | None:
        if self.intake is None or not self.intake.started:
            return "the consumer is not running"
        await self.store.ping()
        return None

    async def run(self) -> None:
        try:
            await self._run()
        except _KAFKA_REFUSALS as exc:
            raise NotifyConfigurationError(
                f"KAFKA_SASL_USERNAME: the broker refused the notifier's principal ({type(exc).__name__}): it needs "
                "the notifier's ACLs (scripts/kafka_acls.py --notify)"
            ) from None
        finally:
            for channel in self.channels:
                with contextlib.suppress(Exception):
                    await channel.aclose()
            await self.store.dispose()
            log.info("notify: stopped")

    async def _run(self) -> None:
        settings = self.settings
        try:
            await self.store.prepare()
        except SchemaTooNew as exc:
            raise NotifyConfigurationError(str(exc)) from None
        except (SQLAlchemyError, OSError) as exc:  # only the class: a driver's text may quote the URL
            cause: BaseException = exc
            while cause.__cause__ is not None:  # the driver's own error, under SQLAlchemy's wrappers
                cause = cause.__cause__
            raise NotifyConfigurationError(
                f"DATABASE_URL: the notifier's tables could not be prepared ({type(cause).__name__})"
            ) from None
        await ensure_dead_letter_topic(settings)
        producer = dead_letter_producer(settings)
        await producer.start()
        try:
            await self._serve(producer)
        finally:
            await producer.stop()

    async def _serve(self, producer: AIOKafkaProducer) -> None:
        settings = self.settings
        dead_letters = DeadLetters(producer, settings.notify_dlq_topic)
        dispatchers = {
            channel.name: ChannelDispatcher(
                channel, self.store, settings, self.policy, self.metrics, dead_letters, self.owner, self._now, self._rng
            )
            for channel in self.channels
        }

        def wake(names: set[str]) -> None:
            for name in names:
                dispatchers[name].wake()

        intake = Intake(settings, self.store, self.channels, self.policy, self.metrics, dead_letters, wake, self._now)
        self.intake = intake
        tasks: list[asyncio.Task[None]] = []
        try:
            await intake.start()
            if settings.notify_http_port:
                http = HttpServer(
                    create_app(self.metrics, self.ready), settings.notify_http_host, settings.notify_http_port
                )
                try:
                    await http.start()
                except OSError as exc:
                    raise NotifyConfigurationError(
                        f"NOTIFY_HTTP_PORT: cannot listen on {settings.notify_http_host}:{settings.notify_http_port} "
                        f"({exc.strerror or type(exc).__name__})"
                    ) from None
                self.http = http
            tasks = [asyncio.create_task(dispatcher.run()) for dispatcher in dispatchers.values()]
            tasks.append(asyncio.create_task(self._housekeeping()))
            log.info(
                "notify: running (group %s, channels: %s)",
                settings.consumer_group,
                ", ".join(dispatchers) or "none configured",
            )
            await self._read(intake)
        finally:
            self._stop.set()
            await intake.stop()
            for dispatcher in dispatchers.values():
                dispatcher.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.http is not None:
                await self.http.stop()

    async def _read(self, intake: Intake) -> None:
        failures = 0
        trouble = OutageLog(log, "a batch could not be taken in; reading it again")
        while not self._stop.is_set():
            batch = await intake.consumer.getmany(timeout_ms=200, max_records=500)
            if not batch:
                continue
            try:
                await intake.process(batch)
                failures = 0
                trouble.succeeded()
            except Exception as exc:
                # The store (or the broker) away: nothing of the batch is committed; read it again.
                trouble.failed(exc)
                assigned = intake.consumer.assignment()  # a rebalance may have moved some away
                for partition, records in batch.items():
                    if partition in assigned:
                        intake.consumer.seek(partition, records[0].offset)
                failures += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), min(_RETRY_BATCH_MAX_SECONDS, 0.1 * 2**failures))

    async def _housekeeping(self) -> None:
        """The queued gauges, and the pruning of finished deliveries past NOTIFY_RETENTION_DAYS."""
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        retention = timedelta(days=self.settings.notify_retention_days)
        while not self._stop.is_set():
            try:
                counts = await self.store.pending_counts()
                for channel in self.channels:
                    self.metrics.queued.labels(channel=channel.name).set(counts.get(channel.name, 0))
                if loop.time() >= next_prune:
                    pruned = await self.store.prune(before=self._now() - retention)
                    if pruned:
                        log.info("notify: pruned %d finished deliveries", pruned)
                    next_prune = loop.time() + (_PRUNE_INTERVAL_SECONDS if pruned < 10_000 else 1.0)
            except Exception as exc:
                log.warning("notify: housekeeping failed (%s)", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stop.wait(), min(_GAUGE_INTERVAL_SECONDS, 20 * self.settings.notify_poll_interval_seconds)
                )


async def run_notifier(settings: NotifySettings, channels: Sequence[Channel] | None = None) -> None:
    """Run until SIGTERM or SIGINT. Channels default to the configured ones; none configured
    still runs (and records nothing: every notice is skipped)."""
    if channels is None:
        channels = load_channels(database_url=settings.database_url.get_secret_value())
    notifier = Notifier(settings, channels)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # Windows
            loop.add_signal_handler(signum, notifier.stop)
    await notifier.run()
