"""Every refreshable platform, end to end: a TokenService on real Postgres against the provider
sandbox over HTTP, one provider dialect at a time (providers.md; contract §2, §5-6).

Ground truth comes from the sandbox: which tokens are live, what it answered and in what order.
Scenarios that have to wait (rate limits, timeouts, slow answers) run once per module, all
platforms at once, and are then asserted platform by platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from sqlalchemy import select, update

from stream_app import TokenService
from stream_app.catalog import REFRESHABLE_PLATFORMS
from stream_app.catalog import platform as platform_spec
from stream_app.clock import to_naive_utc, utc_now
from stream_app.crypto import TokenCipher, TokenField
from stream_app.db.connections import get_connection
from stream_app.db.models import ConnectionRow, OutboxRow
from stream_app.errors import ProviderError
from stream_app.providers import ProviderClient
from stream_app.sandbox import SandboxServer
from stream_app.settings import Settings, collect_platform_variables, load_settings
from tests.support.connections import seed_connection

if TYPE_CHECKING:
    from stream_app.engine import RefreshResult

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="module")]

PLATFORMS = (
    "spotify",
    "discord",
    "youtube",
    "gmail",
    "google_calendar",
    "github_app",
    "x",
    "linkedin",
    "reddit",
    "twitch",
    "microsoft",
    "slack",
)
GOOGLE = ("youtube", "gmail", "google_calendar")

# providers.md, provider by provider.
# The HTTP status of "this refresh token is dead" (GitHub and Slack say it inside a 200).
DEAD_GRANT_STATUS = {**dict.fromkeys(PLATFORMS, 400), "github_app": 200, "slack": 200}
# The HTTP status of "these client credentials are wrong".
BAD_CLIENT_STATUS = {
    **dict.fromkeys(PLATFORMS, 401),
    "spotify": 400,
    "twitch": 403,
    "github_app": 200,
    "slack": 200,
}
# The provider's own code for a dead grant, which the stored error names (Twitch sends none).
DEAD_GRANT_CODES = {
    **dict.fromkeys(PLATFORMS, "invalid_grant"),
    "github_app": "bad_refresh_token",
    **dict.fromkeys(("x", "linkedin", "reddit"), "invalid_request"),
    "slack": "invalid_refresh_token",
}
# The provider's own words, which are never stored nor published (they may quote secrets).
DEAD_GRANT_WORDS = ("Refresh token", "Token has been", "Value passed", "AADSTS", "authorization grant")
# A refresh spends the presented token at once ...
SINGLE_USE = frozenset({"discord", "github_app", "x", "slack"})
# ... and presenting a spent one again revokes the whole family (RFC 9700 §4.14.2).
REUSE_REVOKES_FAMILY = frozenset({"x"})

# Every token the sandbox issues starts with one of these.
TOKEN_PREFIXES = ("sbx_at_", "sbx_rt_")

FAST = {
    "retry_base_delay_seconds": 0.01,
    "retry_max_delay_seconds": 0.05,
    "rate_limit_default_wait_seconds": 0.2,
}


# -- the harness ---------------------------------------------------------------------------


def service_settings(
    sandbox: SandboxServer,
    postgres_url: str,
    encryption_key: str,
    *,
    wrong_secret_for: str | None = None,
    **overrides: Any,
) -> Settings:
    """Settings pointing every platform at the sandbox, as its ``service_env()`` says."""
    env = sandbox.service_env()
    if wrong_secret_for is not None:
        env[f"{platform_spec(wrong_secret_for).credential_key.upper()}_CLIENT_SECRET"] = "not-the-client-secret"
    return load_settings(
        encryption_key=encryption_key,
        database_url=postgres_url,
        **collect_platform_variables(env),
        **(FAST | overrides),
    )


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[TokenService]:
    service = TokenService(settings)
    try:
        yield service
    finally:
        await service.aclose()


@dataclass(frozen=True)
class Conn:
    user_id: uuid.UUID
    platform: str
    grant: dict[str, Any]  # the sandbox grant as it was when the user connected

    @property
    def grant_id(self) -> str:
        return str(self.grant["grant_id"])


@dataclass(frozen=True)
class Call:
    result: RefreshResult | None  # None for an on-demand call (get_valid_access_token)
    access_token: str | None  # what the caller got back
    elapsed: float
    before: datetime  # naive UTC, as the database stores it
    after: datetime


@dataclass(frozen=True)
class OutboxEvent:
    topic: str
    raw: str

    @property
    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.raw)
        return data


@dataclass(frozen=True)
class Observed:
    """One refresh and everything it left behind."""

    call: Call
    row: ConnectionRow
    events: list[OutboxEvent]
    truth: dict[str, Any]  # the sandbox grant now
    answers: list[int]  # statuses the sandbox sent for this grant, in order

    @property
    def result(self) -> RefreshResult:
        assert self.call.result is not None
        return self.call.result

    @property
    def event(self) -> OutboxEvent:
        assert len(self.events) == 1, [e.topic for e in self.events]
        return self.events[0]


class Harness:
    def __init__(self, service: TokenService, sandbox: SandboxServer) -> None:
        self.service = service
        self.sandbox = sandbox
        self.topics = service.settings.topic_names()

    async def connect(self, platform: str, *, expires_in: timedelta = timedelta(days=1), **grant: Any) -> Conn:
        """A new user connected to ``platform`` with a fresh sandbox grant. By default the token is
        far from due, so no scheduler scanning this database (another test's worker) touches it;
        the tests refresh it manually."""
        user_id, snapshot = await seed_connection(
            self.service.database, self.service.cipher, self.sandbox, platform, expires_in=expires_in, **grant
        )
        return Conn(user_id, platform, snapshot)

    def fault(self, platform: str, mode: str, **spec: Any) -> None:
        self.sandbox.state.add_fault({"platform": platform, "mode": mode, **spec})

    def decrypt(self, row: ConnectionRow | None, field: TokenField) -> str:
        assert row is not None
        return self.service.cipher.decrypt_column(row, field)

    def client_secret(self, platform: str) -> str:
        return self.service.settings.credentials[
            platform_spec(platform).credential_key
        ].client_secret.get_secret_value()

    def truth(self, conn: Conn) -> dict[str, Any]:
        grant = self.sandbox.state.grant(conn.grant_id)
        assert grant is not None
        return grant.snapshot()

    def history(self, conn: Conn) -> list[dict[str, Any]]:
        return [r for r in self.sandbox.state.history() if r["grant_id"] == conn.grant_id]

    async def row(self, conn: Conn) -> ConnectionRow:
        async with self.service.database.sessions() as session:
            row = await get_connection(session, conn.user_id, conn.platform)
        assert row is not None
        return row

    async def put_refresh_token(self, conn: Conn, ciphertext: str | None) -> None:
        async with self.service.database.transaction() as session:
            await session.execute(
                update(ConnectionRow)
                .where(ConnectionRow.user_id == conn.user_id, ConnectionRow.platform == conn.platform)
                .values(refresh_token=ciphertext)
            )

    async def events(self, conn: Conn) -> list[OutboxEvent]:
        key = f"{conn.user_id}:{conn.platform}".encode()
        async with self.service.database.sessions() as session:
            rows = await session.execute(
                select(OutboxRow.topic, OutboxRow.payload).where(OutboxRow.key == key).order_by(OutboxRow.id)
            )
        return [OutboxEvent(topic, payload.decode()) for topic, payload in rows]

    async def call(self, conn: Conn, *, trigger: str = "manual", timeout: float = 10.0) -> Call:
        before, started = utc_now(), time.monotonic()
        if trigger == "manual":
            result = await asyncio.wait_for(
                self.service.engine.refresh(conn.user_id, conn.platform, trigger="manual"), timeout
            )
            access = result.tokens.access_token if result.tokens else None
        else:
            result = None
            access = await asyncio.wait_for(self.service.get_valid_access_token(conn.user_id, conn.platform), timeout)
        return Call(result, access, time.monotonic() - started, before, utc_now())

    async def observe(self, conn: Conn, call: Call) -> Observed:
        history = self.history(conn)
        return Observed(
            call, await self.row(conn), await self.events(conn), self.truth(conn), [r["status"] for r in history]
        )

    async def refresh(self, conn: Conn, **options: Any) -> Observed:
        return await self.observe(conn, await self.call(conn, **options))

    async def settle(self, conns: list[Conn], answers: int, timeout: float = 5.0) -> None:
        """Wait until the sandbox has recorded ``answers`` requests per grant (a request the
        client gave up on is recorded only when the sandbox finishes it)."""
        deadline = time.monotonic() + timeout
        while any(len(self.history(c)) < answers for c in conns) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    # -- assertions shared by the tests ---------------------------------------------------

    def assert_secret_free(self, conn: Conn, *texts: str | None) -> None:
        """No token the sandbox issued (nor the client secret) in any of ``texts``."""
        truth = self.truth(conn)
        issued = [*truth["access_tokens"], *truth["valid_refresh_tokens"], *truth["spent_refresh_tokens"]]
        for text in texts:
            text = text or ""
            for needle in (*TOKEN_PREFIXES, *issued, self.client_secret(conn.platform)):
                assert needle not in text, f"secret material in {text!r}"


def assert_stores_live_tokens(cipher: TokenCipher, obs: Observed) -> None:
    """The row holds exactly the tokens the provider now considers live, and says so."""
    assert cipher.decrypt_column(obs.row, "access_token") == obs.truth["live_access_token"]
    assert cipher.decrypt_column(obs.row, "refresh_token") == obs.truth["live_refresh_token"]
    assert (obs.row.status, obs.row.last_sync_status, obs.row.last_sync_error) == ("connected", "success", None)


def assert_expiry_anchored(obs: Observed, *, latency: float = 0.0) -> None:
    """token_expires_at = (when the successful request left) + the expires_in the provider sent:
    no earlier than the call began, and at least ``latency`` before the answer came back."""
    lifetime = timedelta(seconds=obs.truth["expires_in"])
    assert obs.row.token_expires_at is not None
    assert (
        obs.call.before + lifetime <= obs.row.token_expires_at <= obs.call.after + lifetime - timedelta(seconds=latency)
    )


@pytest.fixture(autouse=True)
def _sandbox_left_clean(sandbox: SandboxServer) -> Iterator[None]:
    yield
    sandbox.state.clear_faults()
    sandbox.state.latency = 0.0


@pytest.fixture(autouse=True)
def _no_token_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG, logger="stream_app")
    yield
    assert not [prefix for prefix in TOKEN_PREFIXES if prefix in caplog.text], "a token reached the logs"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def harnesses(
    sandbox: SandboxServer, postgres_url: str, encryption_key: str
) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    """One service per distinct set of options, shared by the module's tests."""
    opened: dict[tuple[tuple[str, Any], ...], Harness] = {}
    async with contextlib.AsyncExitStack() as stack:

        async def open_(**options: Any) -> Harness:
            key = tuple(sorted(options.items()))
            if key not in opened:
                settings = service_settings(sandbox, postgres_url, encryption_key, **options)
                opened[key] = Harness(await stack.enter_async_context(running(settings)), sandbox)
            return opened[key]

        yield open_


@pytest_asyncio.fixture(loop_scope="module")
async def h(harnesses: Callable[..., Awaitable[Harness]]) -> Harness:
    return await harnesses()


each_platform = pytest.mark.parametrize("platform", PLATFORMS)


async def test_every_refreshable_platform_is_covered() -> None:
    assert sorted(REFRESHABLE_PLATFORMS) == sorted(PLATFORMS)


# -- 1. success ------------------------------------------------------------------------------


# A manual refresh happens whatever the expiry; an on-demand one for a token that is due under
# any refresh policy: one that has already expired.
TRIGGERS = {"manual": timedelta(days=1), "on_demand": timedelta(seconds=-30)}


@pytest.mark.parametrize("trigger", TRIGGERS)
@each_platform
async def test_refresh_stores_what_the_provider_issued(h: Harness, platform: str, trigger: str) -> None:
    conn = await h.connect(platform, expires_in=TRIGGERS[trigger])
    obs = await h.refresh(conn, trigger=trigger)

    if obs.call.result is not None:
        assert obs.result.outcome == "refreshed"
    assert obs.answers == [200] and obs.truth["refresh_count"] == 1
    assert obs.call.access_token == obs.truth["live_access_token"] != conn.grant["live_access_token"]
    assert_stores_live_tokens(h.service.cipher, obs)
    assert_expiry_anchored(obs)

    event = obs.event
    assert event.topic == h.topics["token.refreshed"]
    rotated = obs.truth["live_refresh_token"] != conn.grant["live_refresh_token"]
    assert event.payload["refresh_token_rotated"] is rotated
    assert event.payload["reason"] == trigger
    assert event.payload["attempts"] == 1
    assert event.payload["expires_in"] == obs.truth["expires_in"]
    assert to_naive_utc(datetime.fromisoformat(event.payload["token_expires_at"])) == obs.row.token_expires_at
    h.assert_secret_free(conn, event.raw)

    if trigger == "on_demand":  # now fresh: handed out again without asking the provider
        assert await h.service.get_valid_access_token(conn.user_id, platform) == obs.call.access_token
        assert len(h.history(conn)) == 1


# -- 5. a response without a refresh token ------------------------------------------------------


@each_platform
async def test_response_without_refresh_token_keeps_the_stored_one(h: Harness, platform: str) -> None:
    conn = await h.connect(platform, rotation="none")  # the sandbox omits refresh_token
    for expected_count in (1, 2):  # the second refresh proves the kept token still works
        obs = await h.refresh(conn)
        assert obs.result.outcome == "refreshed"
        assert obs.result.tokens is not None and obs.result.tokens.refresh_token is None
        assert obs.truth["refresh_count"] == expected_count
        assert h.decrypt(obs.row, "refresh_token") == conn.grant["live_refresh_token"]
    assert [e.payload["refresh_token_rotated"] for e in obs.events] == [False, False]


# -- 2. a dead grant ------------------------------------------------------------------------------


async def refresh_dead_grant(h: Harness, platform: str, reason: str) -> tuple[Conn, Observed]:
    conn = await h.connect(platform)
    h.sandbox.state.revoke(conn.grant_id, reason)
    return conn, await h.refresh(conn)


@pytest.mark.parametrize("reason", ["revoked", "expired"])
@each_platform
async def test_dead_grant_needs_reauth(h: Harness, platform: str, reason: str) -> None:
    conn, obs = await refresh_dead_grant(h, platform, reason)

    assert (obs.result.outcome, obs.result.reason) == ("needs_reauth", "invalid_grant")
    assert obs.answers == [DEAD_GRANT_STATUS[platform]]
    assert (obs.row.status, obs.row.last_sync_status) == ("needs_reauth", "error")
    assert obs.row.last_sync_error
    assert h.decrypt(obs.row, "refresh_token") == conn.grant["live_refresh_token"]
    event = obs.event
    assert event.topic == h.topics["token.needs_reauth"]
    assert (event.payload["reason"], event.payload["status"]) == ("invalid_grant", "needs_reauth")
    h.assert_secret_free(conn, obs.row.last_sync_error, event.raw)
    # Dead is dead: no token for callers, and no further calls to the provider.
    assert await h.service.get_valid_access_token(conn.user_id, platform) is None
    assert len(h.history(conn)) == 1


@pytest.mark.parametrize("reason", ["revoked", "expired"])
@each_platform
async def test_dead_grant_error_names_the_providers_code(h: Harness, platform: str, reason: str) -> None:
    """Contract §2: ``error`` is the provider's error code and a description, sanitised: our
    own description, never the provider's text."""
    _, obs = await refresh_dead_grant(h, platform, reason)
    assert obs.row.last_sync_error == obs.event.payload["error"]
    assert obs.event.payload["error"].startswith(f"{DEAD_GRANT_CODES[platform]}: ")
    assert not [words for words in DEAD_GRANT_WORDS if words in obs.event.payload["error"]]


# -- 3. refused client credentials -------------------------------------------------------------


@pytest.mark.parametrize("how", ["fault", "wrong_secret"])
@each_platform
async def test_refused_client_credentials(
    harnesses: Callable[..., Awaitable[Harness]], platform: str, how: str
) -> None:
    h = await harnesses(wrong_secret_for=platform if how == "wrong_secret" else None)
    conn = await h.connect(platform)
    if how == "fault":
        h.fault(platform, "invalid_client")
    obs = await h.refresh(conn)

    assert (obs.result.outcome, obs.result.reason) == ("failed", "invalid_client")
    assert obs.answers == [BAD_CLIENT_STATUS[platform]]  # once: no retry
    assert obs.truth["refresh_count"] == 0
    assert (obs.row.status, obs.row.last_sync_status) == ("error", "error")
    assert h.decrypt(obs.row, "refresh_token") == conn.grant["live_refresh_token"]
    event = obs.event
    assert event.topic == h.topics["token.refresh_failed"]
    assert (event.payload["error_class"], event.payload["will_retry"], event.payload["status"]) == (
        "invalid_client",
        False,
        "error",
    )
    h.assert_secret_free(conn, obs.row.last_sync_error, event.raw)


# -- 4. faults that end quickly -----------------------------------------------------------------


@each_platform
async def test_one_server_error_is_retried(h: Harness, platform: str) -> None:
    conn = await h.connect(platform)
    h.fault(platform, "server_error")
    obs = await h.refresh(conn)

    assert obs.result.outcome == "refreshed"
    assert obs.answers == [500, 200]
    assert obs.event.payload["attempts"] == 2
    assert_stores_live_tokens(h.service.cipher, obs)
    assert_expiry_anchored(obs)


@each_platform
async def test_server_errors_on_every_attempt_give_up_for_now(h: Harness, platform: str) -> None:
    conn = await h.connect(platform)
    calls = 1 + h.service.settings.refresh_max_attempts  # the first call, then the retries
    h.fault(platform, "server_error", count=calls)
    obs = await h.refresh(conn)

    assert (obs.result.outcome, obs.result.reason) == ("failed", "server_error")
    assert obs.answers == [500] * calls
    assert h.sandbox.state.pending_faults() == []
    assert (obs.row.status, obs.row.last_sync_status) == ("connected", "error")
    assert h.decrypt(obs.row, "refresh_token") == conn.grant["live_refresh_token"]
    event = obs.event
    assert event.topic == h.topics["token.refresh_failed"]
    assert (event.payload["error_class"], event.payload["will_retry"], event.payload["status"]) == (
        "server_error",
        True,
        "connected",
    )


@each_platform
async def test_echoed_token_is_never_repeated(h: Harness, platform: str) -> None:
    conn = await h.connect(platform)
    h.fault(platform, "echo_token")
    obs = await h.refresh(conn)

    assert [r["fault"] for r in h.history(conn)] == ["echo_token"]
    assert obs.result.outcome == "needs_reauth"
    h.assert_secret_free(conn, obs.row.last_sync_error, obs.event.raw, repr(obs.result))

    h.fault(platform, "echo_token")
    client = ProviderClient(h.service.http, h.service.settings)
    with pytest.raises(ProviderError) as caught:
        await client.refresh(platform_spec(platform), conn.grant["live_refresh_token"])
    exc = caught.value
    h.assert_secret_free(conn, str(exc), repr(exc), exc.description, "".join(traceback.format_exception(exc)))


@each_platform
async def test_spent_refresh_token_presented_again(h: Harness, platform: str) -> None:
    conn = await h.connect(platform)
    old = (await h.row(conn)).refresh_token
    assert (await h.refresh(conn)).result.outcome == "refreshed"
    await h.put_refresh_token(conn, old)  # as if the rotation had never been stored

    obs = await h.refresh(conn)
    if platform in SINGLE_USE:
        assert (obs.result.outcome, obs.result.reason) == ("needs_reauth", "invalid_grant")
        assert obs.row.status == "needs_reauth"
        assert [e.topic for e in obs.events] == [h.topics["token.refreshed"], h.topics["token.needs_reauth"]]
        h.assert_secret_free(conn, obs.row.last_sync_error, obs.events[-1].raw)
    else:  # the old token stays valid with this provider
        assert obs.result.outcome == "refreshed"
        assert_stores_live_tokens(h.service.cipher, obs)
    if platform in REUSE_REVOKES_FAMILY:
        assert (obs.truth["revoked"], obs.truth["revoked_reason"]) == (True, "reuse_detected")
    else:
        assert obs.truth["revoked"] is False


# -- 4. faults that make the service wait --------------------------------------------------------

# With no hint to honour the service would not wait at all.
HINT_ONLY = {"rate_limit_default_wait_seconds": 0}


@dataclass(frozen=True)
class Waiting:
    fault: dict[str, Any] | None  # queued once for each platform
    settings: dict[str, Any]
    wait: float  # the refresh takes at least this long ...
    leeway: float = 1.5  # ... and at most this much longer
    attempts: int = 1  # a 429 (or a throttling 403) is not an attempt
    answers: tuple[int, ...] = (429, 200)
    latency: float = 0.0  # the sandbox answers this much later


def rate_limit(style: str, retry_after: float = 1.0) -> dict[str, Any]:
    return {"mode": "rate_limit", "rate_limit_style": style, "retry_after": retry_after}


WAITING = {
    "retry_after_seconds": Waiting(rate_limit("retry_after_seconds"), HINT_ONLY, 1.0),
    # Whole seconds: up to one more second to the next tick.
    "retry_after_date": Waiting(rate_limit("retry_after_date"), HINT_ONLY, 1.0, leeway=2.5),
    "discord_body": Waiting(rate_limit("discord_body", 0.6), HINT_ONLY, 0.6),
    "x_reset": Waiting(rate_limit("x_reset"), HINT_ONLY, 1.0, leeway=2.5),
    "bare_429": Waiting(rate_limit("none"), {"rate_limit_default_wait_seconds": 0.4}, 0.4),
    "forbidden_html": Waiting(
        {"mode": "forbidden_html"}, {"rate_limit_default_wait_seconds": 0.4}, 0.4, answers=(403, 200)
    ),
    # The first request times out on our side; the sandbox records it (499) when it gives up too.
    "timeout": Waiting(
        {"mode": "timeout", "delay": 1.5}, {"http_timeout_seconds": 0.5}, 0.5, attempts=2, answers=(200, 499)
    ),
    "slow_answer": Waiting(None, {}, 0.3, answers=(200,), latency=0.3),
}
# Only Google documents a bare 403 page as throttling. From any other provider it is a gateway's
# page that judges nothing: an unexpected_response, retried after the ordinary backoff (so an
# attempt), not waited out.
NOT_GOOGLE = {"forbidden_html": replace(WAITING["forbidden_html"], wait=0.0, leeway=1.0, attempts=2)}


# A single-use platform's answer is waited for past HTTP_TIMEOUT_SECONDS (LATE_ANSWER_SECONDS):
# the timed-out request is answered, and nothing is sent a second time.
SINGLE_USE_WAITS = {"timeout": replace(WAITING["timeout"], wait=1.5, attempts=1, answers=(200,))}


def expected_wait(scenario: str, platform: str) -> Waiting:
    if platform not in GOOGLE and scenario in NOT_GOOGLE:
        return NOT_GOOGLE[scenario]
    if platform in SINGLE_USE and scenario in SINGLE_USE_WAITS:
        return SINGLE_USE_WAITS[scenario]
    return WAITING[scenario]


async def run_waiting(sandbox: SandboxServer, postgres_url: str, encryption_key: str) -> dict[tuple[str, str], Any]:
    """Each scenario once, every platform concurrently: {(scenario, platform): Observed or the error}."""
    observed: dict[tuple[str, str], Any] = {}
    try:
        for name, scenario in WAITING.items():
            settings = service_settings(sandbox, postgres_url, encryption_key, **scenario.settings)
            async with running(settings) as service:
                h = Harness(service, sandbox)
                conns = list(await asyncio.gather(*(h.connect(platform) for platform in PLATFORMS)))
                await asyncio.gather(*(h.row(c) for c in conns))  # the pool's connections, opened untimed
                for conn in conns:
                    if scenario.fault is not None:
                        h.fault(conn.platform, **scenario.fault)
                sandbox.state.latency = scenario.latency
                try:
                    calls = await asyncio.gather(
                        *(h.call(c, timeout=scenario.wait + scenario.leeway + 5) for c in conns),
                        return_exceptions=True,
                    )
                finally:
                    sandbox.state.latency = 0.0
                await h.settle(conns, len(scenario.answers))
                for conn, call in zip(conns, calls, strict=True):
                    observed[name, conn.platform] = (
                        call if isinstance(call, BaseException) else await h.observe(conn, call)
                    )
    finally:
        sandbox.state.clear_faults()
    return observed


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def waited(sandbox: SandboxServer, postgres_url: str, encryption_key: str) -> dict[tuple[str, str], Any]:
    return await run_waiting(sandbox, postgres_url, encryption_key)


@each_platform
@pytest.mark.parametrize("scenario", WAITING)
async def test_waits_then_refreshes(
    waited: dict[tuple[str, str], Any], encryption_key: str, scenario: str, platform: str
) -> None:
    obs, spec = waited[scenario, platform], expected_wait(scenario, platform)
    assert isinstance(obs, Observed), f"the refresh did not complete: {obs!r}"

    assert obs.result.outcome == "refreshed"
    assert obs.answers == list(spec.answers)
    assert spec.wait <= obs.call.elapsed <= spec.wait + spec.leeway
    assert obs.event.payload["attempts"] == spec.attempts
    assert_stores_live_tokens(TokenCipher(encryption_key), obs)
    assert_expiry_anchored(obs, latency=spec.latency)


# -- 5. a provider that answers after the HTTP deadline ------------------------------------------

LATE_SETTINGS = {"http_timeout_seconds": 1, "refresh_lease_seconds": 6}  # late answers: up to 4 s more


@pytest.mark.parametrize("platform", sorted(SINGLE_USE))
async def test_a_late_answer_of_a_single_use_provider_is_waited_for(
    harnesses: Callable[..., Awaitable[Harness]], platform: str
) -> None:
    """The request left, so the provider spent the refresh token: giving up on its answer at
    the deadline would lose the rotated one, and the next attempt would present a spent token
    (X revokes the whole grant for it)."""
    h = await harnesses(**LATE_SETTINGS)
    assert platform_spec(platform).single_use_refresh_tokens
    conn = await h.connect(platform)
    h.sandbox.state.latency = 2.0  # after HTTP_TIMEOUT_SECONDS, inside the late-answer window

    obs = await h.refresh(conn)

    assert obs.result.outcome == "refreshed"
    assert obs.truth["revoked"] is False
    assert_stores_live_tokens(h.service.cipher, obs)
    assert len(h.history(conn)) == 1  # one request, answered late: no second spend


async def test_only_single_use_providers_get_the_late_answer_window() -> None:
    assert {key for key in REFRESHABLE_PLATFORMS if platform_spec(key).single_use_refresh_tokens} == SINGLE_USE
