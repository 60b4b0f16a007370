"""Where a user's address comes from: a SQL query on the product's database, or an HTTP lookup.

A lookup answers a Recipient, or None when the user has no address (the delivery is then
permanently failed by the channel). A lookup that cannot answer now (database or service down,
timeout, 5xx) raises a retryable DeliveryFailed. No reason holds the address or a secret.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from stream_app.notify.channel import DeliveryFailed, http_failure
from stream_app.notify.deadline import wait_at_most
from stream_app.notify.hidden_url import HiddenUrl


@dataclass(frozen=True)
class Recipient:
    address: str  # as the lookup gave it; parsed and checked by the channel
    name: str | None = None


class AddressLookup(Protocol):
    async def find(self, user_id: uuid.UUID) -> Recipient | None: ...

    async def aclose(self) -> None: ...


class SqlLookup:
    """``NOTIFY_EMAIL_LOOKUP_SQL``: a query with a ``:user_id`` bind (given as text, which
    PostgreSQL compares with a uuid or a text column alike), answering the address and
    optionally a display name; no row or a NULL address is no address."""

    def __init__(self, sql: str, database_url: str, *, timeout_seconds: float) -> None:
        self._query = text(sql)
        sized = make_url(database_url).get_backend_name() != "sqlite"  # SQLite's pool takes no size
        pool: dict[str, Any] = {"pool_size": 2, "max_overflow": 2} if sized else {}
        self._engine: AsyncEngine = create_async_engine(database_url, pool_pre_ping=True, **pool)
        self._timeout = timeout_seconds
        self._queries: set[asyncio.Future[Any]] = set()  # running, some maybe past their timeout

    async def find(self, user_id: uuid.UUID) -> Recipient | None:
        # The query runs in a task of its own, not waited for past the timeout (wait_at_most).
        query = asyncio.ensure_future(self._row(user_id))
        self._queries.add(query)
        query.add_done_callback(self._queries.discard)
        try:
            row = await wait_at_most(query, self._timeout)
        except TimeoutError:
            raise DeliveryFailed("address lookup query failed (TimeoutError)") from None
        except (SQLAlchemyError, OSError) as exc:
            # The class only: a driver's message may quote the query's parameters.
            raise DeliveryFailed(f"address lookup query failed ({type(exc).__name__})") from None
        if row is None or row[0] is None:
            return None
        name = row[1] if len(row) > 1 and isinstance(row[1], str) else None
        return Recipient(str(row[0]), name or None)

    async def _row(self, user_id: uuid.UUID) -> Any:
        async with self._engine.connect() as connection:
            return (await connection.execute(self._query, {"user_id": str(user_id)})).first()

    async def aclose(self) -> None:
        for query in list(self._queries):
            query.cancel()
        await self._engine.dispose()


_MAX_ANSWER = 64 * 1024


async def _bounded_body(response: httpx.Response) -> bytes | None:
    """The answer's body, or None past _MAX_ANSWER bytes (read no further)."""
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > _MAX_ANSWER:
            return None
    return body


class HttpLookup:
    """``NOTIFY_EMAIL_LOOKUP_URL``: GET the template with ``{user_id}`` filled in; 200 with
    ``{"email": ..., "name": ...}``; 404 (or a null email) is no address; 408, 429 and 5xx
    and timeouts are retried; other answers are permanent (``http_failure``)."""

    def __init__(self, url_template: str, *, bearer_token: str | None, timeout_seconds: float) -> None:
        self._template = url_template
        headers = {"Accept": "application/json", "User-Agent": "token-refresh-notify"}
        if bearer_token:
            headers["Authorization"] = f"Bearer {bearer_token}"
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout_seconds, follow_redirects=False)
        self._deadline = 2 * timeout_seconds  # the whole exchange; httpx times each step
        # The URL up to {user_id}, and with it the user's id (the notifier logs none).
        self._log_filter = HiddenUrl(url_template.partition("{user_id}")[0], "<address lookup>").install()

    async def find(self, user_id: uuid.UUID) -> Recipient | None:
        try:
            # A deadline for the whole exchange too (httpx's is per step: a drip of bytes outlasts
            # it), and a bounded answer (an address and a name, not megabytes).
            async with asyncio.timeout(self._deadline):
                async with self._client.stream("GET", self._template.format(user_id=user_id)) as response:
                    content = await _bounded_body(response)
        except TimeoutError:
            raise DeliveryFailed(f"address lookup did not answer within {self._deadline:g} s") from None
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"address lookup unreachable ({type(exc).__name__})") from None
        if response.status_code == 404:
            return None
        if 300 <= response.status_code < 400:
            raise DeliveryFailed(
                f"address lookup answered HTTP {response.status_code} (redirects are not followed)", permanent=True
            )
        if response.status_code != 200:
            raise http_failure("address lookup", response.status_code, response.headers)
        if content is None:
            raise DeliveryFailed(f"address lookup answered more than {_MAX_ANSWER // 1024} KiB")
        try:
            body: Any = json.loads(content)
        except (ValueError, RecursionError):  # RecursionError: JSON nested past the decoder's depth
            raise DeliveryFailed("address lookup answered something other than JSON") from None
        if not isinstance(body, dict):
            raise DeliveryFailed("address lookup's answer is not a JSON object")
        email, name = body.get("email"), body.get("name")
        if email is None:
            return None
        if not isinstance(email, str):
            raise DeliveryFailed("address lookup's email is not a string", permanent=True)
        return Recipient(email, name if isinstance(name, str) and name else None)

    async def aclose(self) -> None:
        self._log_filter.remove()
        await self._client.aclose()
