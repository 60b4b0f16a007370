"""The three references, run in this process: raw aiohttp, an Authlib loop, the seed's serial loop.

Each refreshes the same N grants once against the same sandbox endpoint. The Authlib and
serial loops work on the table the way their authors would: read the stored (encrypted)
refresh token, refresh, write the new tokens back encrypted, with plain SQL.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import httpx

# Authlib 1.9.10 prefers httpx2 and warns when it falls back to httpx, which this project uses;
# its own module installs an "always" filter on import, so ours goes in after it.
from authlib.deprecate import AuthlibDeprecationWarning  # type: ignore[import-untyped]

from stream_app.clock import utc_now
from stream_app.crypto import TokenBinding, TokenCipher

from .environment import PLATFORM, Environment, Grant
from .results import Measurement
from .rows import dsn

with warnings.catch_warnings():
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client  # type: ignore[import-untyped]

SELECT_ALL = "SELECT id, user_id, platform, refresh_token FROM platform_connections WHERE status = 'connected'"
SELECT_ONE = "SELECT * FROM platform_connections WHERE user_id = $1 AND platform = $2"
STORE = (
    "UPDATE platform_connections SET access_token = $1, refresh_token = $2, token_expires_at = $3, "
    "last_refreshed_at = $4, updated_at = $4, last_sync_status = 'success' WHERE id = $5"
)


class RefreshFailed(RuntimeError):
    """A path got an answer without an access token (the message never holds a token)."""


def _cpu() -> float:
    return time.process_time()


async def raw(environment: Environment, grants: list[Grant], in_flight: int) -> Measurement:
    """aiohttp alone: ``in_flight`` tasks share the grants; no database, no Kafka."""
    client_id, secret = environment.client_credentials
    authorization = {"Authorization": aiohttp.encode_basic_auth(client_id, secret), "Accept": "application/json"}
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def refresh(grant: Grant) -> None:
            form = {"grant_type": "refresh_token", "refresh_token": grant.refresh_token}
            async with session.post(environment.token_url, data=form, headers=authorization) as response:
                body = await response.json()
            if response.status != 200 or "access_token" not in body:
                raise RefreshFailed(f"raw: HTTP {response.status}")

        async def drain(queue: Iterator[Grant]) -> int:
            done = 0
            for grant in queue:  # one iterator shared by every task: each grant once
                await refresh(grant)
                done += 1
            return done

        # Warm-up: open the pool's connections (not timed, not counted).
        await asyncio.gather(*(refresh(grant) for grant in grants[:in_flight]))
        queue = iter(grants)
        cpu, started = _cpu(), time.perf_counter()
        done = sum(await asyncio.gather(*(drain(queue) for _ in range(in_flight))))
        seconds = time.perf_counter() - started
    return Measurement("raw", done, seconds, cpu_seconds=_cpu() - cpu, peak_rss_bytes=None)


def _store_values(cipher: TokenCipher, row: Any, token: dict[str, Any], refresh_token: str) -> tuple[Any, ...]:
    now = utc_now()
    user_id, platform = row["user_id"], row["platform"]
    new_refresh = token.get("refresh_token") or refresh_token
    return (
        cipher.encrypt(token["access_token"], TokenBinding(user_id, platform, "access_token")),
        cipher.encrypt(new_refresh, TokenBinding(user_id, platform, "refresh_token")),
        now + timedelta(seconds=int(token.get("expires_in") or 3600)),
        now,
        row["id"],
    )


def _stored_refresh_token(cipher: TokenCipher, row: Any) -> str:
    return cipher.decrypt(row["refresh_token"], TokenBinding(row["user_id"], row["platform"], "refresh_token"))


async def authlib_loop(environment: Environment, in_flight: int) -> Measurement:
    """What a Python user writes in an afternoon: read every stored connection, refresh each with
    one shared Authlib ``AsyncOAuth2Client`` (httpx's default pool), write the new tokens back
    with plain SQL on an asyncpg pool (its defaults, 10 connections), at most ``in_flight`` at once."""
    client_id, secret = environment.client_credentials
    cipher = environment.cipher
    pool = await asyncpg.create_pool(dsn(environment.database_url))
    client = AsyncOAuth2Client(client_id, secret, token_endpoint_auth_method="client_secret_basic")  # noqa: S106 - a method name
    semaphore = asyncio.Semaphore(in_flight)

    async def one(row: Any) -> None:
        async with semaphore:
            refresh_token = _stored_refresh_token(cipher, row)
            token = dict(await client.refresh_token(environment.token_url, refresh_token=refresh_token))
            if "access_token" not in token:
                raise RefreshFailed("authlib: no access_token in the answer")
            await pool.execute(STORE, *_store_values(cipher, row, token, refresh_token))

    try:
        cpu, started, since = _cpu(), time.perf_counter(), utc_now()
        rows = await pool.fetch(SELECT_ALL)
        await asyncio.gather(*(one(row) for row in rows))
        seconds = time.perf_counter() - started
        cpu_seconds = _cpu() - cpu
        refreshed = await pool.fetchval(
            "SELECT count(*) FROM platform_connections WHERE last_refreshed_at >= $1", since
        )
    finally:
        await client.aclose()
        await pool.close()
    return Measurement("authlib", int(refreshed), seconds, cpu_seconds=cpu_seconds)


async def serial_loop(environment: Environment) -> Measurement:
    """The seed's loop (the Node service's ``refreshExpiringTokens``): list the expiring
    connections, then for each in turn read it, refresh it with httpx, update the row."""
    client_id, secret = environment.client_credentials
    cipher = environment.cipher
    connection = await asyncpg.connect(dsn(environment.database_url))
    async with httpx.AsyncClient(timeout=10) as http:
        try:
            cpu, started, since = _cpu(), time.perf_counter(), utc_now()
            listed = await connection.fetch(
                "SELECT user_id, platform FROM platform_connections WHERE status = 'connected'"
            )
            for item in listed:
                row = await connection.fetchrow(SELECT_ONE, item["user_id"], item["platform"])
                refresh_token = _stored_refresh_token(cipher, row)
                response = await http.post(
                    environment.token_url,
                    data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                    auth=(client_id, secret),
                    headers={"Accept": "application/json"},
                )
                token = response.json()
                if response.status_code != 200 or "access_token" not in token:
                    raise RefreshFailed(f"serial: HTTP {response.status_code}")
                await connection.execute(STORE, *_store_values(cipher, row, token, refresh_token))
            seconds = time.perf_counter() - started
            cpu_seconds = _cpu() - cpu
            refreshed = await connection.fetchval(
                "SELECT count(*) FROM platform_connections WHERE last_refreshed_at >= $1", since
            )
        finally:
            await connection.close()
    return Measurement("serial", int(refreshed), seconds, cpu_seconds=cpu_seconds)


__all__ = ["PLATFORM", "authlib_loop", "raw", "serial_loop"]
