"""Hostile token endpoints, end to end on Postgres (issue 9, items 4 and 6).

A provider that echoes every encoding of every secret it was sent (the refresh token, the
client secret, the ``id:secret`` pair, the Basic header) in each dialect's error shape: none of
it reaches the table, the events written for publishing, or any log line at DEBUG. A provider
that sends numbers no lifetime or wait can hold: the tokens it issued are stored, once, with
a sane expiry, and nothing is retried in a loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from secrets import token_hex
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select

from stream_app import TokenService
from stream_app.catalog import platform as platform_spec
from stream_app.clock import utc_now
from stream_app.db.connections import get_connection
from stream_app.db.models import ConnectionRow, OutboxRow
from stream_app.providers.client import MAX_EXPIRES_IN_SECONDS
from stream_app.sandbox import SandboxServer
from stream_app.sandbox.dialects import PLATFORMS, credential_key
from stream_app.sandbox.echo import encodings
from stream_app.settings import load_settings
from tests.support.connections import seed_connection

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="module")]

# One platform per sandbox dialect.
ONE_PER_DIALECT = (
    "spotify",
    "discord",
    "youtube",
    "github_app",
    "x",
    "linkedin",
    "reddit",
    "twitch",
    "microsoft",
    "slack",
)
SHAPES = ("bad_grant", "wrong_client", "code", "page")
# Secrets that encode differently in every scheme: spaces, slashes, quotes, a backslash, non-ASCII.
SECRET_TAIL = 's\u00e9/c r=e&t"\\x'


def _credentials() -> dict[str, tuple[str, str]]:
    keys = dict.fromkeys(credential_key(p) for p in PLATFORMS)
    return {key: (f"{key} client/\u00fc", f"{index:03d}{SECRET_TAIL}{token_hex(8)}") for index, key in enumerate(keys)}


@pytest.fixture(scope="module")
def echo_sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(credentials=_credentials()) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def service(
    echo_sandbox: SandboxServer, postgres_url: str, encryption_key: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[TokenService]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in echo_sandbox.service_env().items():
            patch.setenv(name, value)
        settings = load_settings(
            encryption_key=encryption_key,
            database_url=postgres_url,
            token_spool_dir=tmp_path_factory.mktemp("spool"),
            retry_base_delay_seconds=0.01,
            rate_limit_default_wait_seconds=120,
        )
    built = TokenService(settings)
    yield built
    await built.aclose()


@pytest.fixture(autouse=True)
def _clean_faults(echo_sandbox: SandboxServer) -> Iterator[None]:
    yield
    echo_sandbox.state.clear_faults()


async def _refresh(service: TokenService, sandbox: SandboxServer, platform: str, **fault: Any) -> dict[str, Any]:
    user_id, grant = await seed_connection(
        service.database, service.cipher, sandbox, platform, expires_in=timedelta(days=1)
    )
    sandbox.state.add_fault({"platform": platform, **fault})
    result = await asyncio.wait_for(service.engine.refresh(user_id, platform, trigger="manual"), 60)
    sandbox.state.clear_faults()
    async with service.database.sessions() as session:
        row = await get_connection(session, user_id, platform)
        key = f"{user_id}:{platform}".encode()
        events = (await session.execute(select(OutboxRow.payload).where(OutboxRow.key == key))).scalars().all()
    assert row is not None
    requests = [r for r in sandbox.state.history() if r["grant_id"] == grant["grant_id"]]
    return {"result": result, "row": row, "events": [e.decode() for e in events], "grant": grant, "requests": requests}


def _secret_needles(sandbox: SandboxServer) -> set[str]:
    """Every form the sandbox echoed of every secret sent to it, 8 characters or longer."""
    secrets = [*sandbox.state.issued()["refresh_tokens"]]
    pairs = []
    for key in dict.fromkeys(credential_key(p) for p in PLATFORMS):
        client_id, secret = sandbox.credentials(key)
        secrets.append(secret)
        pairs.append(f"{client_id}:{secret}")
    needles = {form for secret in secrets for form in encodings(secret) if len(form) >= 8}
    # A pair's prefixes are the client id's, which is no secret: its whole encodings only.
    needles |= {form for pair in pairs for form in encodings(pair)[:7]}
    return needles | {"sbx_rt_"}


async def test_a_provider_echoing_every_secret_in_every_encoding_reaches_nothing(
    service: TokenService, echo_sandbox: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[dict[str, Any]] = []
    for platform in ONE_PER_DIALECT:
        for shape in SHAPES:
            seen.append(await _refresh(service, echo_sandbox, platform, mode="echo_secrets", shape=shape, count=9))

    assert all(s["requests"] and all(r["fault"] == "echo_secrets" for r in s["requests"]) for s in seen)
    stored = [s["row"].last_sync_error or "" for s in seen]
    published = [event for s in seen for event in s["events"]]
    assert len(published) == len(seen) and all(stored)
    outcomes = {(s["result"].outcome, s["result"].reason) for s in seen}
    assert {
        ("needs_reauth", "invalid_grant"),
        ("failed", "invalid_client"),
        ("needs_reauth", "unknown_error"),
    } <= outcomes
    # What is kept: a well-formed code, our own words, an HTTP status and at most a common media type.
    ours = re.compile(
        r"[a-z0-9_.-]{1,64}: [a-z ;']+ \(HTTP \d+(, Basic challenge)?\)"
        r"|unexpected answer: HTTP \d+ with no OAuth error code \((another media type|[a-z/+.-]+)\)"
    )
    assert [text for text in stored if not ours.fullmatch(text)] == []
    assert "unexpected answer: HTTP 401 with no OAuth error code (another media type)" in stored
    logs = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    assert "Token endpoint's own words" in logs  # the DEBUG line was written, scrubbed
    haystacks = {"table": "\n".join(stored), "events": "\n".join(published), "logs": logs}
    needles = _secret_needles(echo_sandbox)
    leaks = {(where, needle) for where, text in haystacks.items() for needle in needles if needle in text}
    assert not leaks


DEFAULT_LIFETIME = {p: platform_spec(p).default_expires_in for p in ("discord", "slack", "x")}
HOSTILE_NUMBERS = [
    "1e400",
    "-1e400",
    "1000000000000",
    "2147483648",
    "1" + "0" * 5000,
    "-5",
    "0",
    "0.5",
    "NaN",
    "Infinity",
    '"1e400"',
    '"soon"',
    "true",
    "null",
    '{"seconds": 3600}',
]


@pytest.mark.parametrize("number", HOSTILE_NUMBERS, ids=lambda n: n[:24])
@pytest.mark.parametrize("platform", sorted(DEFAULT_LIFETIME))
async def test_a_hostile_expires_in_still_stores_the_issued_tokens(
    service: TokenService, echo_sandbox: SandboxServer, platform: str, number: str
) -> None:
    """Single-use rotation: the presented token is spent by the answer; its tokens must land."""
    before = utc_now()
    seen = await _refresh(service, echo_sandbox, platform, mode="hostile_number", number=number)

    assert (seen["result"].outcome, len(seen["requests"])) == ("refreshed", 1), seen["result"]
    row: ConnectionRow = seen["row"]
    truth = echo_sandbox.state.grant(seen["grant"]["grant_id"])
    assert truth is not None and truth.refresh_count == 1
    assert service.cipher.decrypt_column(row, "access_token") == truth.live_access_token
    assert service.cipher.decrypt_column(row, "refresh_token") == truth.live_refresh_token
    assert row.token_lifetime_seconds == DEFAULT_LIFETIME[platform]
    assert row.token_expires_at is not None and before < row.token_expires_at
    assert row.token_expires_at <= utc_now() + timedelta(seconds=MAX_EXPIRES_IN_SECONDS)
    assert (row.status, row.last_sync_status) == ("connected", "success")


HOSTILE_WAITS = [
    "1" + "0" * 400,  # a JSON integer no float holds
    "1e400",
    "-7",
    "NaN",
    "Mon, 01 Jan 2030 00:00:00 +99999999999999999999",
    "Fri, 31 Dec 99999 23:59:59 GMT",
]


@pytest.mark.parametrize("number", HOSTILE_WAITS, ids=lambda n: n[:24])
async def test_a_hostile_wait_is_bounded_and_spends_nothing(
    service: TokenService, echo_sandbox: SandboxServer, number: str
) -> None:
    seen = await _refresh(service, echo_sandbox, "discord", mode="hostile_number", shape="retry_after", number=number)

    result, row = seen["result"], seen["row"]
    assert result.outcome in ("deferred", "refreshed"), result
    assert len(seen["requests"]) <= 3  # the 429, at most a retry or two: no loop
    if result.outcome == "deferred":
        assert row.refresh_not_before is not None
        assert row.refresh_not_before <= utc_now() + timedelta(seconds=service.settings.rate_limit_default_wait_seconds)
    truth = echo_sandbox.state.grant(seen["grant"]["grant_id"])
    assert truth is not None
    assert service.cipher.decrypt_column(row, "refresh_token") == truth.live_refresh_token
