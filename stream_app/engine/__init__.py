"""The refresh engine: one refresh of one connection, from decision to committed outcome.

At most one refresh of a connection is in flight anywhere: callers in this process queue on
a lock and callers in other processes wait for the row's lease, then re-decide (usually:
the token is now fresh, and they share the result). The tokens, the status columns and the
outcome event change in one transaction before anything else happens. Runs the same way
from a Faust agent, the CLI and the Python API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

from schemas import RefreshReason
from stream_app.backoff import Backoff
from stream_app.catalog import PlatformSpec, platform
from stream_app.clock import utc_now
from stream_app.crypto import TokenCipher, UnknownKeyError
from stream_app.db import ConnectionStatus, Database
from stream_app.db.bulk import LeasedConnection
from stream_app.db.connections import forget_refresh_request, get_connection
from stream_app.decisions import Action, Decision, RefreshPolicy, decide_refresh
from stream_app.engine.breaker import CircuitState, Permit
from stream_app.engine.circuit_events import CircuitEvents
from stream_app.engine.claims import ClaimRequest, Claims
from stream_app.engine.gates import PlatformGates
from stream_app.engine.lease import Lease, LeaseLost, Leases, process_name
from stream_app.engine.outcomes import LOST_RACE, OutcomeWriter, RefreshResult
from stream_app.engine.spool import TokenSpool
from stream_app.errors import (
    DecryptionError,
    ProviderError,
    ProviderRateLimited,
    ReauthRequiredError,
    RetryableProviderError,
)
from stream_app.failpoints import Failpoints
from stream_app.keyed_lock import KeyedLocks
from stream_app.metrics import record_refresh
from stream_app.privacy import UserIdHasher
from stream_app.providers import ProviderClient, RefreshedTokens
from stream_app.settings import Settings

__all__ = ["REFRESHING_ELSEWHERE", "RefreshEngine", "RefreshResult"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# The reason a caller is given when another process is still refreshing past its deadline.
REFRESHING_ELSEWHERE = "refreshing_elsewhere"
# A provider that keeps answering 429 is given up on after this many waits (not attempts).
MAX_RATE_LIMIT_WAITS = 5
# A held refresh waits beyond its platform's announced end by half of how long the throttle has
# lasted, up to this: a throttle renewed in short steps does not bring every held row back
# through the scan at each step (its probe still goes at each step's end).
MAX_THROTTLE_BACKOFF_SECONDS = 300.0


class NotCalled:
    """A call given up before it went out: the platform's gates closed while it waited for a slot."""


NOT_CALLED = NotCalled()


class RefreshEngine:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        providers: ProviderClient,
        cipher: TokenCipher,
        policy: RefreshPolicy,
        *,
        hasher: UserIdHasher,
        on_outbox_write: Callable[[], None] = lambda: None,
        on_stored: Callable[[uuid.UUID, str], None] = lambda *_: None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._db = database
        self._providers = providers
        self._cipher = cipher
        self._hash = hasher
        self._backoff = Backoff.from_settings(settings)
        self._policy = policy
        self._sleep = sleep
        self._leases = Leases(database, settings.refresh_lease_seconds)
        self._claims = Claims(database, self._leases, policy)
        self._outcomes = OutcomeWriter(
            database,
            cipher,
            policy,
            settings.topic_names(),
            on_outbox_write,
            Failpoints(settings.failpoints),
            TokenSpool(settings.token_spool_dir),
            on_stored,
        )
        self._circuit_events = CircuitEvents(
            database,
            settings.topic_names()["provider.circuit_changed"],
            on_outbox_write,
            worker=process_name(),
        )
        self._gates = PlatformGates(settings, on_circuit_change=self._circuit_events)
        self._locks = KeyedLocks()
        self._spending: set[asyncio.Future[Any]] = set()

    def in_flight(self, user_id: uuid.UUID, platform_key: str) -> bool:
        """Whether this process is refreshing (or queued to refresh) the connection now."""
        return self._locks.held((user_id, platform_key))

    async def store_spooled_tokens(self) -> int:
        """Store fresh tokens that a stopped process left in the spool (run at start)."""
        return await self._outcomes.store_orphans()

    async def flush_circuit_events(self, grace_seconds: float) -> None:
        """Write the circuit changes still queued to the outbox (before the process stops),
        waiting ``grace_seconds`` at most."""
        await self._circuit_events.flush(grace_seconds)

    def stuck_circuits(self) -> list[str]:
        """Platforms whose circuit stayed open well past its cool-down (see CircuitBreaker.stuck)."""
        grace = self._settings.scan_interval_seconds + 2 * self._settings.longest_call_seconds
        return self._gates.breaker.stuck(grace)

    async def refresh(
        self,
        user_id: uuid.UUID,
        platform_key: str,
        *,
        trigger: RefreshReason,
        wait_for_others: float | None = None,
    ) -> RefreshResult:
        """Refresh the connection if ``decide_refresh`` says ``trigger`` should (a ``manual``
        trigger: whatever its expiry).

        While another process holds the connection's refresh, wait for it and share its result
        at most ``wait_for_others`` seconds (default: ON_DEMAND_DEADLINE_SECONDS for an on-demand
        caller, as long as it takes otherwise), then return skipped/refreshing_elsewhere."""
        if wait_for_others is None and trigger == "on_demand":
            wait_for_others = self._settings.on_demand_deadline_seconds
        started = time.monotonic()
        async with self._locks.hold((user_id, platform_key)):
            result = await self._refresh_exclusive(user_id, platform_key, trigger, wait_for_others)
        circuit_open = self._gates.circuit_state(platform_key) is CircuitState.OPEN
        record_refresh(platform_key, result.outcome, result.reason, time.monotonic() - started, circuit_open)
        return result

    async def _refresh_exclusive(
        self, user_id: uuid.UUID, platform_key: str, trigger: RefreshReason, wait_for_others: float | None
    ) -> RefreshResult:
        spec = platform(platform_key)
        tag = f"[{platform_key}][{self._hash(user_id)}]"
        deciding: RefreshReason = trigger
        waited = False
        while True:
            # Read, decide and take the lease in one go (batched with other refreshes' claims).
            claim = await self._claims.claim(
                ClaimRequest(user_id, platform_key, deciding, forget_if_held=wait_for_others == 0)
            )
            row, decision, held, due = claim.row, claim.decision, claim.held, claim.due
            if not due or row is None:
                reason = "refreshed_concurrently" if waited and decision.reason == "fresh" else decision.reason
                log.debug("%s No refresh: %s", tag, reason)
                return RefreshResult("skipped", reason)
            if held is not None:
                break
            log.debug("%s A refresh is in flight elsewhere; waiting for it", tag)
            try:
                async with asyncio.timeout(wait_for_others):
                    await self._leases.wait_for_release(row.id)
            except TimeoutError:
                if wait_for_others != 0:
                    async with self._db.transaction() as session:
                        await forget_refresh_request(session, row.id)
                return RefreshResult("skipped", REFRESHING_ELSEWHERE)
            # The refresh we waited for answers a manual request as well as a due one.
            deciding = "on_demand" if trigger == "manual" else trigger
            waited = True
        lease, leased = held
        try:
            async with lease.kept_alive():
                # The row may have changed between the first read and the lease: decide again.
                decision = decide_refresh(leased, spec, utc_now(), self._policy, deciding)
                if decision.action is Action.SKIP:
                    return RefreshResult("skipped", decision.reason)
                return await self._refresh_held(leased, lease, spec, decision, trigger, tag)
        except LeaseLost:
            log.warning("%s Refresh lease lost; another process owns this refresh now", tag)
            return RefreshResult("skipped", "lease_lost")
        finally:
            await lease.release()  # a no-op when the outcome's commit released it

    async def _refresh_held(
        self,
        row: LeasedConnection,
        lease: Lease,
        spec: PlatformSpec,
        decision: Decision,
        trigger: RefreshReason,
        tag: str,
    ) -> RefreshResult:
        if decision.action is Action.REAUTH:
            log.warning("🔐 %s No refresh token - user must re-authenticate", tag)
            return await self._outcomes.needs_reauth(row, lease, decision.reason, None)
        refresh_token = await self._outcomes.stored_refresh_token(row, lease, tag)
        if isinstance(refresh_token, RefreshResult):  # unreadable: deferred (key not configured) or tampered
            return refresh_token
        log.info("🔄 %s Token expiring soon, refreshing...", tag)
        return await self._call_provider(row, lease, spec, refresh_token, trigger, tag)

    async def _call_provider(
        self,
        row: LeasedConnection,
        lease: Lease,
        spec: PlatformSpec,
        refresh_token: str,
        trigger: RefreshReason,
        tag: str,
    ) -> RefreshResult:
        started = time.monotonic()
        failures = rate_limit_waits = 0
        # RATE_LIMIT_MAX_INLINE_WAIT_SECONDS bounds the waits one refresh sleeps through in all,
        # and a platform's waits are slept by PLATFORM_MAX_CONCURRENCY refreshes at most: a
        # throttle of short Retry-Afters, one after another, over thousands of requests is
        # recorded as holds too (slept through, it kept every dispatcher slot, and the
        # partitions' acks, for as long as it lasted).
        inline_left = self._settings.rate_limit_max_inline_wait_seconds
        while True:
            paused = self._gates.paused_for(spec.key)
            if paused > 0:  # another call was told the whole application must wait
                if paused > inline_left or not await self._slept(spec.key, paused):
                    return await self._hold_throttled(row, lease, spec, paused, tag)
                inline_left -= paused
                continue
            # Still ours: never spend a refresh token under a lost lease.
            await lease.ensure_held()
            admitted = self._gates.breaker.admit(spec.key)
            if not isinstance(admitted, Permit):
                if self._gates.circuit_state(spec.key) is CircuitState.OPEN:
                    log.info("%s %s is failing most calls; next attempt in %.0fs", tag, spec.display_name, admitted)
                    return await self._hold(row, lease, admitted, "circuit_open", tag)
                await self._sleep(admitted)  # a half-open trial call is in flight: its verdict comes soon
                continue
            with admitted as permit:
                sent_at = utc_now()
                answer = await self._spend(
                    self._call_and_store(
                        row, lease, spec, refresh_token, permit, sent_at, failures, started, trigger, tag
                    )
                )
            if isinstance(answer, RefreshResult):
                return answer
            if isinstance(answer, LeaseLost):
                raise answer
            if isinstance(answer, NotCalled):
                continue  # the platform was paused or its circuit opened while we queued: look again
            error = answer
            if isinstance(error, ProviderRateLimited):
                rate_limit_waits += 1
                wait = self._rate_limit_wait(error)  # a platform-wide one paused the platform already
                if rate_limit_waits > MAX_RATE_LIMIT_WAITS:
                    return await self._retryable_failure(row, lease, error, tag)
                if wait <= inline_left and await self._slept(spec.key, wait, tag=tag):
                    inline_left -= wait
                    continue
                return await self._hold_throttled(row, lease, spec, wait, tag)
            if isinstance(error, RetryableProviderError):
                failures += 1
                if failures > self._settings.refresh_max_attempts:
                    return await self._retryable_failure(row, lease, error, tag)
                delay = self._backoff.delay(failures)
                log.warning("⏳ %s Temporary error (%s), retrying in %dms", tag, error.error_class, delay * 1000)
                await self._sleep(delay)
                continue
            if isinstance(error, ReauthRequiredError):
                return await self._dead_grant(row, lease, refresh_token, error, tag)
            log.error("❌ %s Client credentials refused: %s", tag, error.description)
            return await self._outcomes.failed(
                row,
                lease,
                error_class=error.error_class,
                error=error.description,
                status=ConnectionStatus.ERROR,
                will_retry=False,
            )

    async def _slept(self, platform_key: str, seconds: float, *, tag: str | None = None) -> bool:
        """Sleep through a wait of the platform, unless enough refreshes already do (then False);
        with ``tag``, a wait this refresh was told to take, which is logged."""
        with self._gates.inline_wait(platform_key) as allowed:
            if allowed:
                if tag is not None:
                    log.warning("⏳ %s Rate limited, waiting %dms before retry", tag, seconds * 1000)
                await self._sleep(seconds)
        return allowed

    async def _spend(self, spending: Coroutine[Any, Any, T]) -> T:
        """Run the part of a refresh that spends the refresh token (the call, then the commit
        of what it returned) to its end even if the caller is cancelled (a worker stopping):
        the provider may already have rotated the token, and its answer must be stored. A
        cancelled caller waits for it up to twice the longest call (``longest_call_seconds``);
        a commit still failing then has its tokens in the spool."""
        task = asyncio.ensure_future(spending)
        self._spending.add(task)
        task.add_done_callback(self._spending.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, timeout=2 * self._settings.longest_call_seconds)
            raise

    async def _call_and_store(
        self,
        row: LeasedConnection,
        lease: Lease,
        spec: PlatformSpec,
        refresh_token: str,
        permit: Permit,
        sent_at: datetime,
        failures: int,
        started: float,
        trigger: RefreshReason,
        tag: str,
    ) -> RefreshResult | ProviderError | LeaseLost | NotCalled:
        answer = await self._one_call(spec, refresh_token, permit, lease)
        if isinstance(answer, RefreshedTokens):
            return await self._refreshed(row, lease, answer, refresh_token, sent_at, failures, started, trigger, tag)
        return answer

    async def _one_call(
        self, spec: PlatformSpec, refresh_token: str, permit: Permit, lease: Lease
    ) -> RefreshedTokens | ProviderError | LeaseLost | NotCalled:
        """One call to the token endpoint: fresh tokens or the provider's error; its verdict
        goes to the circuit breaker. No call (NOT_CALLED, LeaseLost) when what was checked
        before the wait for a slot no longer holds once the slot is ours."""
        # A per-platform cap on calls in flight; waits happen outside it, so one rate-limited
        # connection does not hold back the others of its platform.
        async with self._gates.slot(spec.key):
            # Hundreds of calls can queue here for longer than a 429's answer takes, a circuit
            # takes to open or a lease lives: those calls must not go out.
            if self._gates.paused_for(spec.key) > 0 or (
                not permit.trial and self._gates.circuit_state(spec.key) is not CircuitState.CLOSED
            ):
                return NOT_CALLED
            try:
                await lease.ensure_held()
            except LeaseLost as lost:
                return lost
            except Exception as exc:  # the database: not the provider's failure, and not surely ours
                return LeaseLost(f"refresh lease could not be confirmed ({type(exc).__name__})")
            if not self._gates.may_call(spec.key):  # paused meanwhile, or another call is the probe
                return NOT_CALLED
            paused_again: bool | None = None
            try:
                answer = await self._answer_of(spec, refresh_token, permit)
                paused_again = isinstance(answer, ProviderRateLimited) and answer.platform_wide
                return answer
            finally:
                self._gates.called(spec.key, paused_again=paused_again)

    async def _answer_of(
        self, spec: PlatformSpec, refresh_token: str, permit: Permit
    ) -> RefreshedTokens | ProviderError:
        """The provider's answer; its verdict goes to the breaker and a platform-wide 429 pauses
        the platform, both before the slot goes to the next call queued."""
        try:
            tokens = await self._providers.refresh(spec, refresh_token)
        except ProviderRateLimited as exc:  # an answer (a wait, not an outage)
            if exc.platform_wide:
                self._gates.pause(spec.key, self._rate_limit_wait(exc))
            permit.succeeded()
            return exc
        except RetryableProviderError as exc:  # 5xx, timeouts and network errors: failures
            permit.failed()
            return exc
        except ProviderError as exc:  # a clear answer about this grant or our client
            permit.succeeded()
            return exc
        permit.succeeded()
        return tokens

    async def _refreshed(
        self,
        row: LeasedConnection,
        lease: Lease,
        tokens: RefreshedTokens,
        spent: str,
        sent_at: datetime,
        failures: int,
        started: float,
        trigger: RefreshReason,
        tag: str,
    ) -> RefreshResult:
        result = await self._outcomes.refreshed(
            row,
            lease,
            tokens,
            spent_refresh_token=spent,
            sent_at=sent_at,
            attempts=failures + 1,
            duration_ms=int((time.monotonic() - started) * 1000),
            trigger=trigger,
        )
        if result.outcome == "refreshed":
            log.info("✅ %s Token refreshed successfully (expires in %ss)", tag, tokens.expires_in)
        return result

    async def _hold(self, row: LeasedConnection, lease: Lease, seconds: float, reason: str, tag: str) -> RefreshResult:
        """A wait too long to sleep through: recorded on the row, lease and slot given back; the
        scan brings the connection back when it ends."""
        log.warning("⏳ %s Waiting %.0fs (%s): next attempt scheduled, not slept", tag, seconds, reason)
        until = utc_now() + timedelta(seconds=seconds)
        return await self._outcomes.deferred(row, lease, until=until, reason=reason)

    async def _hold_throttled(
        self, row: LeasedConnection, lease: Lease, spec: PlatformSpec, wait: float, tag: str
    ) -> RefreshResult:
        backoff = min(self._gates.throttled_for(spec.key) / 2, MAX_THROTTLE_BACKOFF_SECONDS)
        return await self._hold(row, lease, max(wait, backoff), "rate_limited", tag)

    async def _dead_grant(
        self, row: LeasedConnection, lease: Lease, spent: str, exc: ReauthRequiredError, tag: str
    ) -> RefreshResult:
        if await self._lost_race(row, spent):
            log.info("%s Refresh token changed while refreshing; not a revocation", tag)
            return LOST_RACE
        log.warning("🔐 %s Refresh token invalid/expired - user must re-authenticate", tag)
        return await self._outcomes.needs_reauth(row, lease, exc.reason, exc.description)

    def circuit_state(self, platform_key: str) -> CircuitState:
        return self._gates.circuit_state(platform_key)

    def circuit_states(self) -> dict[str, CircuitState]:
        """The circuit of every platform this process has called."""
        return self._gates.breaker.states()

    def spooled_tokens(self) -> int:
        """Rotated tokens in the spool, awaiting storage (a database that refused their commit)."""
        return self._outcomes.spooled()

    def _rate_limit_wait(self, exc: ProviderRateLimited) -> float:
        return exc.retry_after if exc.retry_after is not None else self._settings.rate_limit_default_wait_seconds

    async def _lost_race(self, row: LeasedConnection, spent: str) -> bool:
        """Whether the row's refresh token is no longer the one we spent: then the provider's
        refusal answers a race (a reconnect, another refresher), not a revocation."""
        async with self._db.sessions() as session:
            current = await get_connection(session, row.user_id, row.platform)
        if current is None or current.refresh_token is None:
            return True
        try:
            return self._cipher.decrypt_column(current, "refresh_token") != spent
        except (DecryptionError, UnknownKeyError):  # rewritten meanwhile, by someone else
            return True

    async def _retryable_failure(
        self, row: LeasedConnection, lease: Lease, exc: ProviderError, tag: str
    ) -> RefreshResult:
        expired = row.token_expires_at is not None and row.token_expires_at <= utc_now()
        log.error("❌ %s Refresh failed after retries (%s)", tag, exc.error_class)
        return await self._outcomes.failed(
            row,
            lease,
            error_class=exc.error_class,
            error=exc.description,
            status=ConnectionStatus.TOKEN_EXPIRED if expired else ConnectionStatus.CONNECTED,
            will_retry=True,
        )
