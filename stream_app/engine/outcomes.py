"""Recording what a refresh came to: tokens, status columns and the outcome event, in one
transaction that also releases the lease, fenced so a stale holder cannot overwrite.

Fresh tokens are never given up on while the process lives: their commit is retried until it
succeeds, and from its first failure they are also kept in the local spool (sealed), so a
process that must stop meanwhile leaves them for the next one to store."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from schemas import Event, RefreshReason, TokenNeedsReauth, TokenRefreshed, TokenRefreshFailed
from stream_app.backoff import Backoff
from stream_app.batching import Coalescer
from stream_app.clock import to_aware_utc, utc_now
from stream_app.crypto import TokenBinding, TokenCipher, UnknownKeyError
from stream_app.db import ConnectionRow, ConnectionStatus, Database
from stream_app.db.bulk import LeasedConnection, update_fenced_many
from stream_app.db.connections import update_fenced, update_if
from stream_app.db.outbox import add_events, add_records
from stream_app.db.rollup import Tally, add_tallies, in_outbox, tally_of
from stream_app.decisions import RefreshPolicy
from stream_app.engine.lease import Lease
from stream_app.engine.spool import SpooledOutcome, SpoolEntry, TokenSpool
from stream_app.errors import DecryptionError
from stream_app.providers import RefreshedTokens
from stream_app.transient import is_transient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefreshResult:
    """What one call did. ``tokens`` holds plain text and is only set on success."""

    outcome: str  # refreshed | skipped | deferred | needs_reauth | failed
    reason: str
    tokens: RefreshedTokens | None = None
    event: Event | None = None


LOST_RACE = RefreshResult("skipped", "lost_race")

MAX_OUTCOMES_PER_BATCH = 200
CONCURRENT_OUTCOME_BATCHES = 2


class _Write(NamedTuple):
    row: LeasedConnection  # as read when the lease was taken
    lease: Lease
    values: dict[str, Any]
    event: Event | None
    spent: str | None  # the refresh token fresh tokens replace (only for those): plain text
    tally: Tally | None = None  # what the refresh rollup counts once this is stored

    def __repr__(self) -> str:  # never the spent token, wherever a batch is printed
        spent = "<hidden>" if self.spent is not None else None
        return (
            f"_Write(connection={self.row.id}, owner={self.lease.owner}, event={self.event!r}, spent={spent}, "
            f"tally={self.tally!r})"
        )


class OutcomeWriter:
    def __init__(
        self,
        database: Database,
        cipher: TokenCipher,
        policy: RefreshPolicy,
        topics: dict[str, str],
        on_outbox_write: Callable[[], None],
        failpoint: Callable[[str], None],
        spool: TokenSpool,
        on_stored: Callable[[uuid.UUID, str], None] = lambda *_: None,
    ) -> None:
        self._db = database
        self._on_stored = on_stored
        self._spool = spool
        self._failpoint = failpoint
        self._cipher = cipher
        self._policy = policy
        self._topics = topics
        self._on_outbox_write = on_outbox_write
        self._retry = Backoff(base=0.2, cap=5.0, jitter_ratio=0.3)
        self._group: Coalescer[_Write, bool] = Coalescer(
            self._store_batch,
            max_batch=MAX_OUTCOMES_PER_BATCH,
            max_concurrent=CONCURRENT_OUTCOME_BATCHES,
            on_abandoned=self._abandoned,
        )

    async def refreshed(
        self,
        row: LeasedConnection,
        lease: Lease,
        tokens: RefreshedTokens,
        *,
        spent_refresh_token: str,
        sent_at: datetime,
        attempts: int,
        duration_ms: int,
        trigger: RefreshReason,
    ) -> RefreshResult:
        # Anchored to when the request left, not when the answer came back.
        expires_at = sent_at + timedelta(seconds=tokens.expires_in) if tokens.expires_in else None
        now = utc_now()
        values: dict[str, Any] = {
            "access_token": self._cipher.encrypt_column(row, "access_token", tokens.access_token),
            "token_expires_at": expires_at,
            "token_lifetime_seconds": tokens.expires_in,
            "refresh_due_at": self._policy.refresh_at(expires_at, tokens.expires_in),
            "status": ConnectionStatus.CONNECTED,
            "last_sync_status": "success",
            "last_sync_error": None,
            "updated_at": now,
            "last_refreshed_at": now,
            "refresh_requested_at": None,
            "refresh_not_before": None,
            "consecutive_failures": 0,
        }
        # No refresh token in the answer, or the same one again: keep the one we have.
        new_refresh_token = tokens.refresh_token
        rotated = new_refresh_token is not None and new_refresh_token != spent_refresh_token
        if new_refresh_token is not None and rotated:
            values["refresh_token"] = self._cipher.encrypt_column(row, "refresh_token", new_refresh_token)
        event = TokenRefreshed(
            user_id=row.user_id,
            platform=row.platform,
            token_expires_at=to_aware_utc(expires_at),
            expires_in=tokens.expires_in,
            attempts=attempts,
            duration_ms=duration_ms,
            refresh_token_rotated=rotated,
            reason=trigger,
        )
        result = RefreshResult("refreshed", "refreshed", tokens=tokens, event=event)
        if await self._commit(row, lease, values, event, result, spent=spent_refresh_token):
            return result
        return LOST_RACE

    async def needs_reauth(self, row: LeasedConnection, lease: Lease, reason: str, error: str | None) -> RefreshResult:
        values = {
            "status": ConnectionStatus.NEEDS_REAUTH,
            "last_sync_status": "error",
            "last_sync_error": error or reason,
            "updated_at": utc_now(),
            "refresh_requested_at": None,
            "refresh_due_at": None,
            "refresh_not_before": None,
        }
        event = TokenNeedsReauth(user_id=row.user_id, platform=row.platform, reason=reason, error=error)
        return await self._store(row, lease, values, event, RefreshResult("needs_reauth", reason, event=event))

    async def failed(
        self,
        row: LeasedConnection,
        lease: Lease,
        *,
        error_class: str,
        error: str,
        status: ConnectionStatus,
        will_retry: bool,
    ) -> RefreshResult:
        now = utc_now()
        failures = row.consecutive_failures + 1
        retry_at = self._policy.retry_at(now, failures) if will_retry else None
        values = {
            "status": status,
            "last_sync_status": "error",
            "last_sync_error": error,
            "updated_at": now,
            "refresh_requested_at": None,
            "consecutive_failures": failures,
            # Retried on a backoff schedule, or not at all (status error waits for an operator).
            "refresh_due_at": retry_at,
            "refresh_not_before": retry_at,
        }
        event = TokenRefreshFailed(
            user_id=row.user_id,
            platform=row.platform,
            error_class=error_class,
            error=error,
            status=status,
            will_retry=will_retry,
        )
        return await self._store(row, lease, values, event, RefreshResult("failed", error_class, event=event))

    async def deferred(self, row: LeasedConnection, lease: Lease, *, until: datetime, reason: str) -> RefreshResult:
        """Hold the next scheduled attempt until ``until`` without calling the provider; the
        connection's status is untouched, so nothing is published."""
        values = {"refresh_due_at": until, "refresh_not_before": until, "refresh_requested_at": None}
        return await self._store(row, lease, values, None, RefreshResult("deferred", reason))

    async def stored_refresh_token(self, row: LeasedConnection, lease: Lease, tag: str) -> str | RefreshResult:
        """The row's refresh token in plain text, or what its being unreadable came to. Under a
        key id this process has not configured (a key deploy under way), the lease is given back
        with the row as it was (status and schedule kept: a process that has the key, or this
        one once it does, refreshes it when the scan next asks); failing authentication under a
        configured key (tampering), the connection is marked `error` for an operator."""
        try:
            return self._cipher.decrypt_column(row, "refresh_token")
        except UnknownKeyError as exc:
            log.error(
                "🔑 %s Stored token is under key id %s, not configured in this process: not refreshed here, "
                "status kept (give this process that key: ENCRYPTION_KEY or RETIRED_ENCRYPTION_KEYS)",
                tag,
                exc.key_id,
            )
            # Only the request mark is cleared, so the scan asks again; the next attempt is not
            # pushed back, which would hold the row from the processes that have the key.
            values = {"refresh_requested_at": None}
            return await self._store(row, lease, values, None, RefreshResult("deferred", "unknown_key"))
        except DecryptionError as exc:
            log.error("❌ %s Stored refresh token cannot be decrypted: %s", tag, exc)
            return await self.failed(
                row,
                lease,
                error_class="decryption_error",
                error=str(exc),
                status=ConnectionStatus.ERROR,
                will_retry=False,
            )

    async def _store(
        self, row: LeasedConnection, lease: Lease, values: dict[str, Any], event: Event | None, result: RefreshResult
    ) -> RefreshResult:
        """``result`` once stored; if the row changed or the lease was lost, nothing is stored."""
        return result if await self._commit(row, lease, values, event, result) else LOST_RACE

    async def _commit(
        self,
        row: LeasedConnection,
        lease: Lease,
        values: dict[str, Any],
        event: Event | None,
        result: RefreshResult,
        *,
        spent: str | None = None,
    ) -> bool:
        """The row (fenced), the outbox event and the outcome's count in the rollup, in one
        transaction shared with other refreshes' outcomes (group commit). A batch that fails has
        each of its outcomes committed alone."""
        write = _Write(row, lease, values, event, spent, tally_of(row.platform, result.outcome, result.reason))
        try:
            stored = await self._group.submit(write)
        except Exception as exc:
            log.warning("Storing a batch of refresh outcomes failed (%s); storing each alone", type(exc).__name__)
            stored = await self._commit_alone(write, failed_before=True)
        if not stored:
            log.warning("Connection changed or lease lost during refresh; result not stored")
            return False
        self._stored(write)
        if event is not None:
            self._failpoint("after_outbox_commit")
        return True

    def _stored(self, write: _Write) -> None:
        write.lease.released = True  # the fenced update cleared it
        self._on_stored(write.row.user_id, write.row.platform)
        if write.event is not None:
            self._on_outbox_write()

    def _abandoned(self, write: _Write, stored: bool) -> None:
        """An outcome stored for a caller cancelled meanwhile."""
        if stored:
            self._stored(write)

    async def _store_batch(self, writes: Sequence[_Write]) -> list[bool]:
        async with self._db.transaction() as session:
            stored = await update_fenced_many(session, [(w.row, w.lease.owner, w.values) for w in writes])
            for index, write in enumerate(writes):
                if not stored[index] and write.spent is not None:
                    stored[index] = await update_if(
                        session, write.row.id, self._holds(write.spent), write.values, lease_owner=write.lease.owner
                    )
            applied = [write for write, done in zip(writes, stored, strict=True) if done]
            now = utc_now()
            # After every row's update: a key's outbox ids follow its commit order.
            await add_events(
                session,
                [
                    (self._topics[write.event.default_topic], write.event)
                    for write in applied
                    if write.event is not None
                ],
                now,
            )
            # Last, so the rollup's shared rows are locked only for the commit itself.
            await add_tallies(session, [write.tally for write in applied if write.tally is not None], now)
        return stored

    async def _commit_alone(self, write: _Write, *, failed_before: bool = False) -> bool:
        """One transaction for one outcome. Retried while the database is unreachable; fresh
        tokens (``spent``: the refresh token they replace) are retried whatever the error,
        spooled from the first failure on (``failed_before``: their batch's), and stored even
        past a lapsed lease while the row still holds the spent token."""
        row, lease, values, event, spent, tally = write
        failures = 0
        spooled: SpoolEntry | None = None
        if failed_before and spent is not None:
            spooled = self._spool_tokens(row, values, event)
        try:
            while True:
                try:
                    async with self._db.transaction() as session:
                        stored = await update_fenced(session, row, lease.owner, values)
                        if not stored and spent is not None:
                            still_spent = self._holds(spent)
                            stored = await update_if(session, row.id, still_spent, values, lease_owner=lease.owner)
                        if stored:
                            await self._add_alone(session, event, tally)
                    break
                except Exception as exc:
                    if spent is None and not is_transient(exc):
                        raise
                    failures += 1
                    if spent is not None and spooled is None:
                        spooled = self._spool_tokens(row, values, event)
                    log.warning("Storing a refresh outcome failed (%s); retrying", type(exc).__name__)
                    await asyncio.sleep(self._retry.delay(min(failures, 6)))
        except BaseException:
            if spooled is not None:
                spooled.release()  # stopping: the next process on this spool stores them
            raise
        if spooled is not None:
            spooled.discard()
        return stored

    async def _add_alone(self, session: AsyncSession, event: Event | None, tally: Tally | None) -> None:
        """An outcome's event and count, stored alone (its batch failed, maybe after committing)."""
        counted = tally is not None and (event is None or not await in_outbox(session, event.event_id))
        if event is not None:
            await add_events(session, [(self._topics[event.default_topic], event)], utc_now())
        if counted and tally is not None:
            await add_tallies(session, [tally], utc_now())

    def _holds(self, refresh_token: str) -> Callable[[ConnectionRow], bool]:
        """Whether a row (still connected or waiting for a retry) holds ``refresh_token``,
        however it is encrypted now (a key rotation may have re-encrypted it)."""

        def holds(current: ConnectionRow) -> bool:
            if current.status == ConnectionStatus.DISCONNECTED or current.refresh_token is None:
                return False
            try:
                return self._cipher.decrypt_column(current, "refresh_token") == refresh_token
            except (DecryptionError, UnknownKeyError):  # unreadable here: not surely the spent one
                return False

        return holds

    def spooled(self) -> int:
        return self._spool.waiting()

    def _spool_tokens(self, row: LeasedConnection, values: dict[str, Any], event: Event | None) -> SpoolEntry | None:
        if event is None or row.refresh_token is None:
            return None
        outcome = SpooledOutcome(
            connection_id=row.id,
            user_id=row.user_id,
            platform=row.platform,
            spent_refresh_token=row.refresh_token,  # the ciphertext it was read as: sealed
            values=values,
            topic=self._topics[event.default_topic],
            event_id=event.event_id,
            key=event.key.encode(),
            payload=event.to_bytes(),
        )
        try:
            return self._spool.write(outcome)
        except OSError as exc:  # the retries go on; only a crash now could lose these tokens
            log.error("Spooling fresh tokens failed (%s); they stay in memory until stored", type(exc).__name__)
            return None

    async def store_orphans(self) -> int:
        """Store what processes that stopped left in the spool; returns how many were stored."""
        stored = 0
        for entry, outcome in self._spool.orphans():
            binding = TokenBinding(outcome.user_id, outcome.platform, "refresh_token")
            try:
                spent = self._cipher.decrypt(outcome.spent_refresh_token, binding)
            except (DecryptionError, UnknownKeyError):
                log.error("Spool entry %s is under a key no longer configured; left for an operator", entry.path.name)
                entry.release()
                continue
            async with self._db.transaction() as session:
                applied = await update_if(session, outcome.connection_id, self._holds(spent), outcome.values)
                if applied:
                    counted = not await in_outbox(session, outcome.event_id)
                    await add_records(
                        session,
                        [
                            {
                                "event_id": outcome.event_id,
                                "topic": outcome.topic,
                                "key": outcome.key,
                                "payload": outcome.payload,
                                "created_at": utc_now(),
                            }
                        ],
                    )
                    if counted:
                        await add_tallies(session, [Tally(outcome.platform, "refreshed", "")], utc_now())
            if applied:
                stored += 1
                self._on_stored(outcome.user_id, outcome.platform)
                log.warning("Stored fresh tokens a stopped process left in the spool (%s)", entry.path.name)
            else:
                log.warning("Spooled tokens for a connection that has moved on since; dropped (%s)", entry.path.name)
            entry.discard()
        if stored:
            self._on_outbox_write()
        return stored
