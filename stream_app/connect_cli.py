"""``token-refresh connect``: publish a `connection.created` from the shell, its tokens sealed.

For producers with no Kafka client at hand, and for the documentation's examples. The tokens
never come from the command line (``ps`` shows every process's arguments to every user): they
are read from stdin (access token on the first line, refresh token on the second), from a
prompt that does not echo, or from the environment (CONNECT_ACCESS_TOKEN, CONNECT_REFRESH_TOKEN).
Each is sealed as the service stores it (``schemas.encrypt_bound_token``: bound to the user,
platform and field, under ENCRYPTION_KEY), and the event is signed when PRODUCER_SIGNING_KEYS
holds a key (``schemas.sign_event``), so the worker takes it as it takes any producer's.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO

from pydantic import ValidationError

from schemas import ConnectionCreated, encrypt_bound_token, sign_event
from stream_app.catalog import is_known
from stream_app.cli_kafka import kafka_failures_as_one_line
from stream_app.errors import ConfigurationError
from stream_app.kafka_client import existing_partitions, idempotent_producer
from stream_app.settings import Settings

ACCESS_TOKEN_VARIABLE = "CONNECT_ACCESS_TOKEN"
REFRESH_TOKEN_VARIABLE = "CONNECT_REFRESH_TOKEN"


@dataclass(frozen=True)
class Tokens:
    access: str
    refresh: str | None

    def __repr__(self) -> str:  # never a token in a traceback or a log line
        return f"Tokens(access=<{len(self.access)} chars>, refresh={'None' if self.refresh is None else '<set>'})"


@dataclass(frozen=True)
class Published:
    event: ConnectionCreated
    topic: str
    partition: int
    offset: int
    signed_with: str | None


def read_tokens(source: str, stdin: IO[str], prompt: Callable[[str], str], *, with_refresh: bool) -> Tokens:
    """The tokens from ``source``: "stdin" (line 1 the access token, line 2 the refresh token),
    "env" (CONNECT_ACCESS_TOKEN, CONNECT_REFRESH_TOKEN) or "prompt" (``prompt`` must not echo).
    Raises ConfigurationError naming what is missing, never quoting a token."""
    if source == "stdin":
        lines = stdin.read().splitlines()
        access, refresh = [*lines, "", ""][:2]
        where = "stdin (line 1: access token, line 2: refresh token)"
    elif source == "env":
        access = os.environ.get(ACCESS_TOKEN_VARIABLE, "")
        refresh = os.environ.get(REFRESH_TOKEN_VARIABLE, "")
        where = f"{ACCESS_TOKEN_VARIABLE} / {REFRESH_TOKEN_VARIABLE}"
    else:
        access = prompt("Access token")
        refresh = prompt("Refresh token") if with_refresh else ""
        where = "the prompt"
    return _checked(access, refresh if with_refresh else None, where)


def _checked(access: str, refresh: str | None, source: str) -> Tokens:
    access = access.strip()
    if not access:
        raise ConfigurationError(f"no access token from {source}")
    if refresh is not None:
        refresh = refresh.strip()
        if not refresh:
            raise ConfigurationError(f"no refresh token from {source} (--no-refresh-token if the platform issues none)")
    for token in (access, refresh):
        if token is not None and not token.isprintable():
            raise ConfigurationError(f"a token from {source} holds a control or non-printable character")
    return Tokens(access, refresh)


def sealed_event(
    settings: Settings,
    user_id: uuid.UUID,
    platform: str,
    tokens: Tokens,
    *,
    expires_in: int | None,
    scopes: list[str] | None,
) -> ConnectionCreated:
    """The event, its tokens sealed bound to (user, platform, field) under ENCRYPTION_KEY.
    Raises ConfigurationError for an unknown platform or a field the event refuses (a scope)."""
    if not is_known(platform):
        raise ConfigurationError(f"PLATFORM: not a platform of the catalog: {platform!r}")
    key = settings.encryption_key.get_secret_value()
    now = datetime.now(UTC)
    try:
        return _event(user_id, platform, tokens, key, now, expires_in, scopes)
    except ValidationError as exc:
        problems = (
            f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_input=False)
        )
        raise ConfigurationError("; ".join(problems)) from None


def _event(
    user_id: uuid.UUID,
    platform: str,
    tokens: Tokens,
    key: str,
    now: datetime,
    expires_in: int | None,
    scopes: list[str] | None,
) -> ConnectionCreated:
    return ConnectionCreated(
        user_id=user_id,
        platform=platform,
        occurred_at=now,
        access_token=encrypt_bound_token(tokens.access, key, user_id, platform, "access_token"),
        refresh_token=(
            None
            if tokens.refresh is None
            else encrypt_bound_token(tokens.refresh, key, user_id, platform, "refresh_token")
        ),
        token_expires_at=None if expires_in is None else now + timedelta(seconds=expires_in),
        scopes=scopes,
    )


def signing_key(settings: Settings, wanted: str | None) -> tuple[str, str] | None:
    """(key id, secret) to sign with: ``wanted``, else the first of PRODUCER_SIGNING_KEYS; None
    when none is configured."""
    keys = settings.signing_keys()
    if wanted is not None:
        if wanted not in keys:
            raise ConfigurationError("--signing-key-id: not a key id of PRODUCER_SIGNING_KEYS")
        return wanted, keys[wanted]
    return next(iter(keys.items()), None)


async def publish_connection(
    settings: Settings, event: ConnectionCreated, signing: tuple[str, str] | None
) -> Published:
    """Send ``event`` to TOPIC_CONNECTION_CREATED (acks=all, idempotent), keyed by its connection."""
    topic = settings.topic_connection_created
    headers = sign_event(event, *signing) if signing is not None else None
    async with kafka_failures_as_one_line(settings, f"publishing to {topic!r}"):
        # An existing topic only: a send to a missing one waits a minute, or auto-creates it
        # with the broker's defaults.
        await existing_partitions(settings, topic)
        producer = idempotent_producer(settings)
        try:
            await producer.start()
            sent = await producer.send_and_wait(topic, event.to_bytes(), key=event.key.encode(), headers=headers)
        finally:
            await producer.stop()
    return Published(event, topic, sent.partition, sent.offset, signing[0] if signing else None)
