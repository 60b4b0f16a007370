"""The composition root of one process: every long-lived resource, created once."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.exc import DBAPIError

from schemas import TokenExpiring
from stream_app.catalog import PlatformSpec
from stream_app.catalog import platform as platform_spec
from stream_app.clock import utc_now
from stream_app.crypto import TokenCipher, UnknownKeyError
from stream_app.db import ConnectionRow, Database
from stream_app.db.connections import get_connection
from stream_app.decisions import Action, RefreshPolicy, decide_refresh
from stream_app.engine import REFRESHING_ELSEWHERE, RefreshEngine, RefreshResult
from stream_app.errors import DecryptionError, TokenUnavailableError
from stream_app.privacy import UserIdHasher
from stream_app.providers import ProviderClient, build_http_transport
from stream_app.scheduler import scan_expiring
from stream_app.settings import Settings
from stream_app.token_cache import TokenCache

# How long a closing service waits for its queued circuit changes to reach the outbox (a write
# takes milliseconds; longer means the database is away, and they are logged as lost).
CIRCUIT_EVENTS_FLUSH_SECONDS = 5.0

log = logging.getLogger(__name__)


@dataclass(frozen=True, repr=False)
class RefreshedAccessToken:
    """A plain-text access token for the caller; ``repr`` does not show it."""

    access_token: str
    expires_in: int | None

    def __repr__(self) -> str:
        return f"RefreshedAccessToken(expires_in={self.expires_in})"


class TokenService:
    def __init__(self, settings: Settings, *, database: Database | None = None) -> None:
        self.settings = settings
        self.database = database or Database.from_settings(settings)
        self.http = build_http_transport()
        self.cipher = TokenCipher.from_settings(settings)
        self.hash_user_id = UserIdHasher(settings.log_hash_secret())
        self.policy = RefreshPolicy.from_settings(settings)
        self.token_cache = TokenCache(settings.token_cache_ttl_seconds, settings.token_cache_max_entries)
        self.engine = RefreshEngine(
            settings,
            self.database,
            ProviderClient(self.http, settings),
            self.cipher,
            self.policy,
            hasher=self.hash_user_id,
            on_outbox_write=self._outbox_written,
            on_stored=self.token_cache.invalidate,
        )
        self._wake_relay: Callable[[], None] = lambda: None
        self._background: dict[tuple[uuid.UUID, str], asyncio.Task[RefreshResult]] = {}

    def on_outbox_write(self, callback: Callable[[], None]) -> None:
        """Called after each commit that wrote an outcome event (the worker wakes its relay)."""
        self._wake_relay = callback

    def _outbox_written(self) -> None:
        self._wake_relay()

    async def aclose(self) -> None:
        """Let refreshes still running in the background finish, then close the HTTP pool and
        the database engine. A call in flight ends within HTTP_TIMEOUT_SECONDS; what still runs
        after twice that is only waiting (for another process, a rate limit) or retrying a
        commit whose tokens are spooled, and is stopped."""
        if self._background:
            _, unfinished = await asyncio.wait(
                list(self._background.values()), timeout=2 * self.settings.longest_call_seconds
            )
            for task in unfinished:
                task.cancel()
        # Circuit changes still queued reach the outbox (this or the next worker's relay publishes them).
        await self.engine.flush_circuit_events(CIRCUIT_EVENTS_FLUSH_SECONDS)
        await self.token_cache.aclose(grace_seconds=self.settings.database_pool_timeout_seconds)
        await self.http.aclose()
        await self.database.dispose()

    async def __aenter__(self) -> TokenService:
        await self.engine.store_spooled_tokens()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def get_valid_access_token(self, user_id: uuid.UUID | str, platform: str) -> str | None:
        """A usable access token, refreshed first if it expires within the buffer; None if the
        connection is missing or dead, or its refresh failed and the token has expired.

        Waits at most ON_DEMAND_DEADLINE_SECONDS for a refresh (another process may hold it, the
        provider may be throttling): then a stored token that is still valid is returned, and
        one that has expired or is about to raises TokenUnavailableError. The refresh itself
        goes on in the background either way, so a rotated token is never abandoned.

        A fresh token is answered from the process-local cache of its sealed row when one is
        held (TOKEN_CACHE_TTL_SECONDS): no database round trip.

        Raises UnknownKeyError when the stored token is under a key id this process has not
        configured (a key deploy not yet complete here): a configuration problem, and the row
        is left as it is."""
        user_id = _as_uuid(user_id)
        spec = platform_spec(platform)
        token = self._cached_fresh_token(user_id, platform, spec)
        if token is not None:
            return token
        row = await self.token_cache.read((user_id, platform), lambda: self._read(user_id, platform))
        decision = decide_refresh(row, spec, utc_now(), self.policy, "on_demand")
        if decision.action is not Action.SKIP:
            self._refuse_a_key_this_process_lacks(row, user_id, platform)
            refresh = self._refresh_in_background(user_id, platform)
            try:
                result = await asyncio.wait_for(asyncio.shield(refresh), self.settings.on_demand_deadline_seconds)
            except TimeoutError:
                return self._stored_token_before_deadline(row, user_id, platform)
            if result.tokens is not None:  # refreshed here: the fresh token, no need to read it back
                return result.tokens.access_token
            row = await self._read(user_id, platform)
            if result.reason == REFRESHING_ELSEWHERE:
                return self._stored_token_before_deadline(row, user_id, platform)
        return self._usable_token(row, user_id, platform)

    def _refuse_a_key_this_process_lacks(self, row: ConnectionRow | None, user_id: uuid.UUID, platform: str) -> None:
        """UnknownKeyError, the row untouched, when its refresh token is under a key id this
        process lacks: a refresh started here could only defer the row, at every call, and so
        hold back the processes that have the key (their scan would find it held)."""
        if row is None or row.refresh_token is None:
            return
        try:
            self.cipher.decrypt_column(row, "refresh_token")
        except UnknownKeyError as exc:
            log.error(
                "[%s][%s] Stored refresh token is under key id %s, not configured in this process: not refreshed here",
                platform,
                self.hash_user_id(user_id),
                exc.key_id,
            )
            raise
        except DecryptionError:
            return  # not readable under a key this process has: the refresh marks the connection

    def _cached_fresh_token(self, user_id: uuid.UUID, platform: str, spec: PlatformSpec) -> str | None:
        """The token of the cached row if it needs no refresh and is valid; None sends the caller
        to the database (nothing cached, or anything to do: due, expired, dead)."""
        cached = self.token_cache.get((user_id, platform), lambda: self._read(user_id, platform))
        if (
            cached is None
            or decide_refresh(cached, spec, utc_now(), self.policy, "on_demand").action is not Action.SKIP
        ):
            return None
        return self._usable_token(cached, user_id, platform)

    def _refresh_in_background(self, user_id: uuid.UUID, platform: str) -> asyncio.Task[RefreshResult]:
        """One background refresh per connection; callers that come while it runs share it."""
        key = (user_id, platform)
        task = self._background.get(key)
        if task is None:
            task = asyncio.create_task(self.engine.refresh(user_id, platform, trigger="on_demand"))
            self._background[key] = task
            task.add_done_callback(lambda _: self._background.pop(key, None))
        return task

    def _stored_token_before_deadline(self, row: ConnectionRow | None, user_id: uuid.UUID, platform: str) -> str | None:
        tag = f"[{platform}][{self.hash_user_id(user_id)}]"
        margin = timedelta(seconds=self.settings.on_demand_deadline_seconds)
        expires_at = row.token_expires_at if row is not None else None
        if expires_at is not None and expires_at <= utc_now() + margin:
            raise TokenUnavailableError(
                f"{tag} the access token has expired or is about to, and its refresh did not complete within "
                f"{self.settings.on_demand_deadline_seconds:g}s; it goes on in the background, try again shortly"
            )
        log.info("%s Refresh still running after the deadline; the stored token is still valid", tag)
        return self._usable_token(row, user_id, platform)

    def _usable_token(self, row: ConnectionRow | None, user_id: uuid.UUID, platform: str) -> str | None:
        if row is None or row.access_token is None or row.status not in ("connected", "token_expired"):
            return None
        if row.token_expires_at is not None and row.token_expires_at <= utc_now():
            return None
        try:
            return self.cipher.decrypt_column(row, "access_token")
        except UnknownKeyError as exc:  # a key deploy under way: the caller's error, the row untouched
            log.error(
                "[%s][%s] Stored access token is under key id %s, not configured in this process",
                platform,
                self.hash_user_id(user_id),
                exc.key_id,
            )
            raise
        except DecryptionError:
            log.error("[%s][%s] Stored access token cannot be decrypted", platform, self.hash_user_id(user_id))
            return None

    async def _read(self, user_id: uuid.UUID, platform: str) -> ConnectionRow | None:
        """The row as stored now. A read on a connection the server dropped (a restart, a
        terminated backend) is tried once more: the pool has discarded its stale connections by then."""
        try:
            return await self._read_once(user_id, platform)
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
            tag = f"[{platform}][{self.hash_user_id(user_id)}]"
            log.warning("%s Database connection lost during a read; reading again", tag)
            return await self._read_once(user_id, platform)

    async def _read_once(self, user_id: uuid.UUID, platform: str) -> ConnectionRow | None:
        async with self.database.sessions() as session:
            return await get_connection(session, user_id, platform)

    async def refresh_platform_token(self, user_id: uuid.UUID | str, platform: str) -> RefreshedAccessToken | None:
        """Refresh now, whatever the expiry (a manual refresh); None if it did not succeed. When
        another process was refreshing the same connection, its result is shared."""
        user_id = _as_uuid(user_id)
        result = await self.engine.refresh(user_id, platform, trigger="manual")
        if result.tokens is not None:
            return RefreshedAccessToken(result.tokens.access_token, result.tokens.expires_in)
        if result.reason != "refreshed_concurrently":
            return None
        row = await self._read(user_id, platform)
        if row is None or row.access_token is None:
            return None
        remaining = None
        if row.token_expires_at is not None:
            remaining = max(0, int((row.token_expires_at - utc_now()).total_seconds()))
        return RefreshedAccessToken(self.cipher.decrypt_column(row, "access_token"), remaining)

    async def refresh_expiring_tokens(self) -> dict[str, int]:
        """Refresh, in this process, every connection the scan finds due; counts by outcome."""
        due: list[TokenExpiring] = []

        async def collect(events: list[TokenExpiring]) -> None:
            due.extend(events)

        await scan_expiring(self.database, self.settings, collect)
        counts = {"refreshed": 0, "needs_reauth": 0, "failed": 0, "skipped": 0}
        for event in due:
            result = await self.engine.refresh(event.user_id, event.platform, trigger="scheduled")
            counts[result.outcome] += 1
        return counts


def _as_uuid(user_id: uuid.UUID | str) -> uuid.UUID:
    return user_id if isinstance(user_id, uuid.UUID) else uuid.UUID(str(user_id))
