"""The refresh engine: one refresh of one connection, from decision to committed outcome.

The tokens, the status columns and the outcome event (in the outbox) change in one
transaction; nothing is published before that commit. Runs the same way from a Faust
agent, the CLI and the Python API.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from schemas import Event, RefreshReason, TokenNeedsReauth, TokenRefreshed, TokenRefreshFailed
from stream_app.backoff import Backoff
from stream_app.catalog import PlatformSpec, platform
from stream_app.clock import to_aware_utc, utc_now
from stream_app.crypto import TokenCipher
from stream_app.db import ConnectionRow, ConnectionStatus, Database
from stream_app.db.connections import get_connection, update_fenced
from stream_app.db.outbox import add_event
from stream_app.decisions import Action, decide_refresh
from stream_app.errors import (
    DecryptionError,
    InvalidClientError,
    ProviderError,
    ProviderRateLimited,
    ReauthRequiredError,
    RetryableProviderError,
)
from stream_app.keyed_lock import KeyedLocks
from stream_app.privacy import UserIdHasher
from stream_app.providers import ProviderClient, RefreshedTokens
from stream_app.settings import Settings

log = logging.getLogger(__name__)

# A provider that keeps answering 429 is given up on after this many waits (not attempts).
MAX_RATE_LIMIT_WAITS = 5


@dataclass(frozen=True)
class RefreshResult:
    """What one call did. ``tokens`` holds plain text and is only set on success."""

    outcome: str  # refreshed | skipped | needs_reauth | failed
    reason: str
    tokens: RefreshedTokens | None = None
    event: Event | None = None


class RefreshEngine:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        providers: ProviderClient,
        cipher: TokenCipher,
        *,
        hasher: UserIdHasher,
        on_outbox_write: Callable[[], None] = lambda: None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._db = database
        self._providers = providers
        self._cipher = cipher
        self._hash = hasher
        self._on_outbox_write = on_outbox_write
        self._sleep = sleep
        self._backoff = Backoff.from_settings(settings)
        self._topics = settings.topic_names()
        self._locks = KeyedLocks()
        self._platform_slots: dict[str, asyncio.Semaphore] = {}

    async def refresh(
        self, user_id: uuid.UUID, platform_key: str, *, trigger: RefreshReason, window_seconds: float | None = None
    ) -> RefreshResult:
        """Refresh the connection if ``decide_refresh`` says so; one refresh per connection at a time
        in this process (callers queue and then find the token fresh)."""
        async with self._locks.hold((user_id, platform_key)):
            return await self._refresh_locked(user_id, platform_key, trigger, window_seconds)

    async def _refresh_locked(
        self, user_id: uuid.UUID, platform_key: str, trigger: RefreshReason, window_seconds: float | None
    ) -> RefreshResult:
        spec = platform(platform_key)
        tag = f"[{platform_key}][{self._hash(user_id)}]"
        async with self._db.sessions() as session:
            row = await get_connection(session, user_id, platform_key)
        window = self._settings.scan_lookahead_seconds if window_seconds is None else window_seconds
        decision = decide_refresh(row, spec, utc_now(), window_seconds=window, forced=trigger == "manual")
        if decision.action is Action.SKIP or row is None:
            log.debug("%s No refresh: %s", tag, decision.reason)
            return RefreshResult("skipped", decision.reason)
        if decision.action is Action.REAUTH:
            log.warning("🔐 %s No refresh token - user must re-authenticate", tag)
            return await self._record_reauth(row, decision.reason, None, tag)
        log.info("🔄 %s Token expiring soon, refreshing...", tag)
        try:
            refresh_token = self._cipher.decrypt(row.refresh_token or "")
        except DecryptionError as exc:
            log.error("❌ %s Stored refresh token cannot be decrypted: %s", tag, exc)
            return await self._record_failure(row, "decryption_error", str(exc), ConnectionStatus.ERROR, False, tag)
        return await self._call_provider(row, spec, refresh_token, trigger, tag)

    async def _call_provider(
        self, row: ConnectionRow, spec: PlatformSpec, refresh_token: str, trigger: RefreshReason, tag: str
    ) -> RefreshResult:
        started = time.monotonic()
        attempts = rate_limit_waits = 0
        while True:
            try:
                # A per-platform cap on calls in flight; waits below happen outside it, so one
                # rate-limited connection does not hold back the others of its platform.
                async with self._platform_slot(spec.key):
                    sent_at = utc_now()
                    tokens = await self._providers.refresh(spec, refresh_token)
            except ProviderRateLimited as exc:
                rate_limit_waits += 1
                if rate_limit_waits > MAX_RATE_LIMIT_WAITS:
                    return await self._record_retryable_failure(row, exc, tag)
                wait = (
                    exc.retry_after if exc.retry_after is not None else self._settings.rate_limit_default_wait_seconds
                )
                log.warning("⏳ %s Rate limited, waiting %dms before retry", tag, wait * 1000)
                await self._sleep(wait)
                continue
            except RetryableProviderError as exc:
                attempts += 1
                if attempts >= self._settings.refresh_max_attempts:
                    return await self._record_retryable_failure(row, exc, tag)
                delay = self._backoff.delay(attempts)
                log.warning("⏳ %s Temporary error (%s), retrying in %dms", tag, exc.error_class, delay * 1000)
                await self._sleep(delay)
                continue
            except ReauthRequiredError as exc:
                log.warning("🔐 %s Refresh token invalid/expired - user must re-authenticate", tag)
                return await self._record_reauth(row, exc.reason, exc.description, tag)
            except InvalidClientError as exc:
                log.error("❌ %s Client credentials refused: %s", tag, exc.description)
                return await self._record_failure(
                    row, exc.error_class, exc.description, ConnectionStatus.ERROR, False, tag
                )
            attempts += 1
            duration_ms = int((time.monotonic() - started) * 1000)
            return await self._record_success(row, tokens, sent_at, attempts, duration_ms, trigger, tag)

    def _platform_slot(self, platform_key: str) -> asyncio.Semaphore:
        slot = self._platform_slots.get(platform_key)
        if slot is None:
            slot = self._platform_slots[platform_key] = asyncio.Semaphore(self._settings.platform_max_concurrency)
        return slot

    async def _record_success(
        self,
        row: ConnectionRow,
        tokens: RefreshedTokens,
        sent_at: datetime,
        attempts: int,
        duration_ms: int,
        trigger: RefreshReason,
        tag: str,
    ) -> RefreshResult:
        # Anchored to when the request left, not when the answer came back.
        expires_at = sent_at + timedelta(seconds=tokens.expires_in) if tokens.expires_in else None
        values: dict[str, Any] = {
            "access_token": self._cipher.encrypt(tokens.access_token),
            "token_expires_at": expires_at,
            "status": ConnectionStatus.CONNECTED,
            "last_sync_status": "success",
            "last_sync_error": None,
            "updated_at": utc_now(),
            "last_refreshed_at": utc_now(),
            "refresh_requested_at": None,
            "consecutive_failures": 0,
        }
        if tokens.refresh_token is not None:
            values["refresh_token"] = self._cipher.encrypt(tokens.refresh_token)
        event = TokenRefreshed(
            user_id=row.user_id,
            platform=row.platform,
            token_expires_at=to_aware_utc(expires_at),
            expires_in=tokens.expires_in,
            attempts=attempts,
            duration_ms=duration_ms,
            refresh_token_rotated=tokens.refresh_token is not None,
            reason=trigger,
        )
        if not await self._commit(row, values, event, tag):
            return RefreshResult("skipped", "lost_race")
        log.info("✅ %s Token refreshed successfully (expires in %ss)", tag, tokens.expires_in)
        return RefreshResult("refreshed", "refreshed", tokens=tokens, event=event)

    async def _record_reauth(self, row: ConnectionRow, reason: str, error: str | None, tag: str) -> RefreshResult:
        values = {
            "status": ConnectionStatus.NEEDS_REAUTH,
            "last_sync_status": "error",
            "last_sync_error": error or reason,
            "updated_at": utc_now(),
            "refresh_requested_at": None,
        }
        event = TokenNeedsReauth(user_id=row.user_id, platform=row.platform, reason=reason, error=error)
        if not await self._commit(row, values, event, tag):
            return RefreshResult("skipped", "lost_race")
        return RefreshResult("needs_reauth", reason, event=event)

    async def _record_retryable_failure(self, row: ConnectionRow, exc: ProviderError, tag: str) -> RefreshResult:
        expired = row.token_expires_at is not None and row.token_expires_at <= utc_now()
        status = ConnectionStatus.TOKEN_EXPIRED if expired else ConnectionStatus.CONNECTED
        log.error("❌ %s Refresh failed after retries (%s)", tag, exc.error_class)
        return await self._record_failure(row, exc.error_class, exc.description, status, True, tag)

    async def _record_failure(
        self,
        row: ConnectionRow,
        error_class: str,
        error: str,
        status: ConnectionStatus,
        will_retry: bool,
        tag: str,
    ) -> RefreshResult:
        values = {
            "status": status,
            "last_sync_status": "error",
            "last_sync_error": error,
            "updated_at": utc_now(),
            "refresh_requested_at": None,
            "consecutive_failures": row.consecutive_failures + 1,
        }
        event = TokenRefreshFailed(
            user_id=row.user_id,
            platform=row.platform,
            error_class=error_class,
            error=error,
            status=status,
            will_retry=will_retry,
        )
        if not await self._commit(row, values, event, tag):
            return RefreshResult("skipped", "lost_race")
        return RefreshResult("failed", error_class, event=event)

    async def _commit(self, row: ConnectionRow, values: dict[str, Any], event: Event, tag: str) -> bool:
        async with self._db.transaction() as session:
            if not await update_fenced(session, row, values):
                log.warning("%s Connection changed during refresh; result not stored", tag)
                return False
            add_event(session, self._topics[event.default_topic], event, utc_now())
        self._on_outbox_write()
        return True
