"""Dispatch: per channel, a feeder claims due deliveries from the store (under a lease) into a
bounded queue that a few senders drain, and a digest task sends each platform's digest at most
once per the channel's window. A channel that is down or slow holds only its own senders: every
channel has its own, and a failing delivery waits out its backoff in the store, not in a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from stream_app.notify.channel import Channel, DeliveryFailed
from stream_app.notify.dead_letters import DeadLetters
from stream_app.notify.metrics import NotifyMetrics
from stream_app.notify.notice import Notice
from stream_app.notify.outage_log import OutageLog
from stream_app.notify.policy import DeliveryPolicy, full_jitter_backoff
from stream_app.notify.settings import NotifySettings
from stream_app.notify.store import Store, utc_now

log = logging.getLogger(__name__)

# A send starts only with at least its timeout and this much of its lease left (else it is renewed).
_LEASE_MARGIN_SECONDS = 5.0


class ChannelDispatcher:
    def __init__(
        self,
        channel: Channel,
        store: Store,
        settings: NotifySettings,
        policy: DeliveryPolicy,
        metrics: NotifyMetrics,
        dead_letters: DeadLetters,
        owner: str,
        now: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
    ) -> None:
        self.channel = channel
        self._store, self._settings, self._policy, self._metrics = store, settings, policy, metrics
        self._dead_letters, self._owner, self._now, self._rng = dead_letters, owner, now, rng
        self._queue: asyncio.Queue[Notice | None] = asyncio.Queue(maxsize=settings.notify_queue_size)
        self._wake = asyncio.Event()
        self._stopping = False
        self._lease = timedelta(seconds=settings.notify_lease_seconds)
        # Notice ids queued or being sent by this dispatcher -> the end of their lease.
        self._held: dict[uuid.UUID, datetime] = {}
        self._claim_trouble = OutageLog(log, f"{channel.name}: due deliveries could not be claimed")
        self._digest_trouble = OutageLog(log, f"{channel.name}: digests could not be sent or recorded")

    @property
    def name(self) -> str:
        return self.channel.name

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Until stop(): feed the senders; then hand back what was claimed but not started and
        let the sends in flight finish (a send that outlives the timeout loses its lease)."""
        senders = [asyncio.create_task(self._sender()) for _ in range(self._settings.notify_senders_per_channel)]
        digests = asyncio.create_task(self._digests()) if self.channel.digest_window_seconds > 0 else None
        try:
            await self._feed()
        finally:
            self._stopping = True
            unsent = []
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is not None:
                    unsent.append(item)
            with contextlib.suppress(Exception):
                await self._store.release(unsent, channel=self.name, owner=self._owner)
            for _ in senders:
                self._queue.put_nowait(None)
            tasks = [*senders, *([digests] if digests else [])]
            _done, pending = await asyncio.wait(tasks, timeout=self._settings.notify_send_timeout_seconds + 1)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _feed(self) -> None:
        while not self._stopping:
            room = self._queue.maxsize - self._queue.qsize()
            now = self._now()
            if room > 0 and not self._quiet(now):
                try:
                    claimed = await self._claim(room, now)
                    self._claim_trouble.succeeded()
                except Exception as exc:  # the store away: try again at the next poll
                    self._claim_trouble.failed(exc)
                    claimed = 0
                if claimed == room:
                    await asyncio.sleep(0)  # more may be due: look again once the senders took some
                    continue
            await self._idle()

    async def _claim(self, room: int, now: datetime) -> int:
        lease_until = now + self._lease
        claimed = await self._store.claim_due(
            channel=self.name, limit=room, owner=self._owner, now=now, lease_until=lease_until
        )
        for notice in claimed:
            queued = notice.notice_id in self._held  # ours already: its lease just renewed
            self._held[notice.notice_id] = lease_until
            if not queued:
                self._queue.put_nowait(notice)
        return len(claimed)

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self._settings.notify_poll_interval_seconds)
        self._wake.clear()

    def _quiet(self, now: datetime) -> bool:
        return self._policy.not_before(now, user_facing=self.channel.user_facing) > now

    async def _sender(self) -> None:
        while True:
            notice = await self._queue.get()
            if notice is None:
                return
            try:
                await self._deliver([notice], digest_platform=None, lease_until=self._held[notice.notice_id])
            except Exception as exc:  # the store away: the lease lapses and the delivery is taken again
                log.error("notify: %s: a delivery's outcome could not be recorded (%s)", self.name, type(exc).__name__)
            finally:
                self._held.pop(notice.notice_id, None)
                if self._queue.qsize() <= self._queue.maxsize // 2:
                    self._wake.set()  # room for more: the feeder need not wait for its poll

    async def _digests(self) -> None:
        window = self.channel.digest_window_seconds
        while not self._stopping:
            try:
                for platform in await self._store.digest_platforms_due(
                    channel=self.name, now=self._now(), window_seconds=window
                ):
                    if self._stopping:
                        break
                    now = self._now()
                    lease_until = now + self._lease
                    notices = await self._store.claim_digest(
                        channel=self.name,
                        platform=platform,
                        owner=self._owner,
                        now=now,
                        lease_until=lease_until,
                        window_seconds=window,
                    )
                    if notices:
                        await self._deliver(notices, digest_platform=platform, lease_until=lease_until)
                self._digest_trouble.succeeded()
            except Exception as exc:  # the store away: try again at the next poll
                self._digest_trouble.failed(exc)
            await self._idle()

    async def _deliver(self, notices: Sequence[Notice], *, digest_platform: str | None, lease_until: datetime) -> None:
        timeout = self._settings.notify_send_timeout_seconds
        now = self._now()
        if (lease_until - now).total_seconds() < timeout + _LEASE_MARGIN_SECONDS:  # it waited long in the queue
            renewed = now + self._lease
            if not await self._store.renew(notices, channel=self.name, owner=self._owner, lease_until=renewed):
                return  # its lease lapsed while it waited, and another notifier took it
        try:
            async with asyncio.timeout(timeout):
                if digest_platform is None:
                    await self.channel.send(notices[0])
                else:
                    await self.channel.send_digest(digest_platform, notices)
        except DeliveryFailed as exc:
            await self._failed(
                notices, digest_platform, exc.reason, permanent=exc.permanent, retry_after=exc.retry_after
            )
        except TimeoutError:
            await self._failed(notices, digest_platform, f"no answer within {timeout:g} s", permanent=False)
        except Exception as exc:  # a channel's bug: its message may quote anything, so only its type
            log.error("notify: %s: send raised %s", self.name, type(exc).__name__)
            await self._failed(notices, digest_platform, f"the channel raised {type(exc).__name__}", permanent=False)
        else:
            now = self._now()
            if digest_platform is not None:
                await self._store.record_digest(channel=self.name, platform=digest_platform, sent_at=now, retry_at=None)
            sent = await self._store.mark_sent(notices, channel=self.name, owner=self._owner, now=now)
            self._metrics.sent.labels(channel=self.name).inc(len(notices))
            if sent < len(notices):
                log.warning("notify: %s: %d sent after their lease lapsed", self.name, len(notices) - sent)

    async def _failed(
        self,
        notices: Sequence[Notice],
        digest_platform: str | None,
        reason: str,
        *,
        permanent: bool,
        retry_after: float | None = None,
    ) -> None:
        self._metrics.failed.labels(channel=self.name).inc()
        attempts, taken_in = await self._store.attempts_and_age(notices, channel=self.name)
        attempts += 1
        now = self._now()
        hours = self._settings.notify_give_up_hours
        left = (taken_in + timedelta(hours=hours) - now).total_seconds()  # until the give-up age
        wait = retry_after if retry_after is not None and retry_after > 0 else 0.0  # NaN: no wait either
        if not permanent and left <= 0:
            reason = f"gave up after {attempts} attempts in {hours:g} h: {reason}"
            permanent = True
        elif not permanent and wait >= left:  # inf included
            reason = f"gave up: the receiver asks to wait past the give-up age ({hours:g} h): {reason}"
            permanent = True
        if permanent:
            try:
                await self._dead_letters.deliveries(notices, channel=self.name, attempts=attempts, reason=reason)
            except Exception as exc:  # the broker away: keep the delivery and try again later
                log.error("notify: %s: dead letter not written (%s); kept for a retry", self.name, type(exc).__name__)
                left = max(left, self._settings.notify_retry_base_seconds)
            else:
                await self._store.mark_dead(notices, channel=self.name, owner=self._owner, error=reason)
                self._metrics.dead_lettered.labels(channel=self.name).inc(len(notices))
                if digest_platform is not None:  # the platform's next digest need not wait
                    await self._store.record_digest(
                        channel=self.name, platform=digest_platform, sent_at=None, retry_at=None
                    )
                return
        backoff = full_jitter_backoff(
            attempts,
            base=self._settings.notify_retry_base_seconds,
            cap=self._settings.notify_retry_max_seconds,
            rng=self._rng,
        )
        # Never sooner than a Retry-After; the last try no later than the give-up age.
        delay = min(max(backoff, wait), left)
        next_attempt_at = self._policy.not_before(now + timedelta(seconds=delay), user_facing=self.channel.user_facing)
        log.info("notify: %s: attempt %d failed (%s); next in %.1f s", self.name, attempts, reason, delay)
        if digest_platform is not None:
            # The digest waits, not its notices: its retry gathers them and those come meanwhile.
            await self._store.record_digest(
                channel=self.name, platform=digest_platform, sent_at=None, retry_at=next_attempt_at
            )
            next_attempt_at = now
        await self._store.reschedule(
            notices, channel=self.name, owner=self._owner, next_attempt_at=next_attempt_at, error=reason
        )
