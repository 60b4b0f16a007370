"""Checks a worker makes at start, before it consumes anything: each refuses with one line
(ConfigurationError) naming the setting, rather than failing one connection at a time later."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr
from sqlalchemy import select

from stream_app.catalog import PLATFORMS
from stream_app.db import Database
from stream_app.db.models import REFRESHABLE_STATUSES, ConnectionRow
from stream_app.errors import ConfigurationError
from stream_app.settings import Settings

SANDBOX_PROBE_PATH = "/_admin/health"
SANDBOX_PROBE_TIMEOUT_SECONDS = 3.0
_CREDENTIAL_KEYS = {spec.key: spec.credential_key for spec in PLATFORMS}


async def refuse_platforms_without_credentials(settings: Settings, database: Database) -> None:
    """A platform with connections to refresh and no client credentials would turn each of them
    into an `error` row at its next refresh: refuse to start instead. Connections no worker
    refreshes any more (needs_reauth, disconnected, error) do not count."""
    unconfigured = {
        spec.key: spec for spec in PLATFORMS if spec.refreshable and spec.credential_key not in settings.credentials
    }
    if not unconfigured:
        return  # the usual production case: no query at all
    # One pass over the refreshable rows, only when some platform is unconfigured.
    statement = (
        select(ConnectionRow.platform)
        .where(ConnectionRow.platform.in_(unconfigured), ConnectionRow.status.in_(REFRESHABLE_STATUSES))
        .distinct()
    )
    async with database.sessions() as session:
        in_use = sorted((await session.execute(statement)).scalars())
    by_key: dict[str, list[str]] = {}
    for platform in in_use:
        by_key.setdefault(unconfigured[platform].credential_key, []).append(platform)
    if by_key:
        raise ConfigurationError("; ".join(_missing_credentials(key, by_key[key]) for key in sorted(by_key)))


def _missing_credentials(credential_key: str, platforms: list[str]) -> str:
    prefix = credential_key.upper()
    has = "has" if len(platforms) == 1 else "have"
    return (
        f"{prefix}_CLIENT_ID, {prefix}_CLIENT_SECRET: not set, but {' and '.join(platforms)} {has} connections "
        "to refresh (set them, or disconnect those connections)"
    )


async def refuse_foreign_credentials_at_the_sandbox(settings: Settings) -> None:
    """The provider sandbox is a test double: it must never receive a real client's credentials
    (nor the real refresh tokens sent with them). Every overridden token URL is asked whether it
    is the sandbox (its health path answers with the clients it accepts; a real provider's does
    not); a sandbox's platform must then use the sandbox's own client."""
    overridden = {
        key: url for key, url in settings.token_urls.items() if key in settings.credentials and urlsplit(url).hostname
    }
    if not overridden:
        return
    async with httpx.AsyncClient(timeout=SANDBOX_PROBE_TIMEOUT_SECONDS, follow_redirects=False) as client:
        answers = await asyncio.gather(*(_sandbox_clients(client, url) for url in overridden.values()))
    problems = []
    for key, clients in zip(overridden, answers, strict=True):
        if clients is None:
            continue  # not a sandbox, or not answering now (judged again at the next start)
        prefix = key.upper()
        sandbox_id, sandbox_secret_sha256 = clients.get(key, (None, None))
        ours = settings.credentials[key]
        if ours.client_id != sandbox_id:
            problems.append(
                f"{prefix}_TOKEN_URL: is the provider sandbox (a test double), but {prefix}_CLIENT_ID is not its "
                f"client: a real client secret and real refresh tokens would be sent to it; point {prefix}_TOKEN_URL "
                "at the provider (or unset it), or use the sandbox's own client in a test deployment"
            )
        elif sandbox_secret_sha256 is not None and sandbox_secret_sha256 != _sha256(ours.client_secret):
            problems.append(
                f"{prefix}_TOKEN_URL: is the provider sandbox (a test double), but {prefix}_CLIENT_SECRET is not its "
                f"client's secret (a real one beside the sandbox's {prefix}_CLIENT_ID?): it would be sent to it in "
                f"clear; use the sandbox's own secret"
            )
    if problems:
        raise ConfigurationError("; ".join(problems))


# Credential key -> (client id, SHA-256 of the client secret when the sandbox says it).
SandboxClients = dict[str, tuple[str, str | None]]


def _sha256(secret: SecretStr) -> str:
    return hashlib.sha256(secret.get_secret_value().encode()).hexdigest()


async def _sandbox_clients(client: httpx.AsyncClient, token_url: str) -> SandboxClients | None:
    """The clients the sandbox behind ``token_url`` accepts; None if it is not a sandbox."""
    for probe in _probe_urls(token_url):
        clients = await _probe(client, probe)
        if clients is not None:
            return clients
    return None


def _probe_urls(token_url: str) -> list[str]:
    """Where a sandbox behind ``token_url`` answers its health: at the origin, and, when the URL
    ends in the sandbox's ``/<platform>/token``, under the path before it (a sandbox behind a
    reverse proxy's path prefix)."""
    parts = urlsplit(token_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    urls = [origin + SANDBOX_PROBE_PATH]
    segments = parts.path.rstrip("/").split("/")
    if len(segments) > 3 and segments[-1] == "token":
        urls.append(origin + "/".join(segments[:-2]) + SANDBOX_PROBE_PATH)
    return urls


async def _probe(client: httpx.AsyncClient, url: str) -> SandboxClients | None:
    try:
        response = await client.get(url)
        body: Any = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    platforms = body.get("platforms") if isinstance(body, dict) and body.get("ok") is True else None
    if not isinstance(platforms, dict):
        return None
    return {
        _CREDENTIAL_KEYS[name]: (str(entry.get("client_id")), _optional_text(entry.get("client_secret_sha256")))
        for name, entry in platforms.items()
        if name in _CREDENTIAL_KEYS and isinstance(entry, dict)
    }


def _optional_text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
