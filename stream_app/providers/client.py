"""One refresh_token grant request to a provider, answered as tokens or a typed error."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport

from stream_app.catalog import PlatformSpec
from stream_app.errors import InvalidClientError, ProviderNetworkError
from stream_app.privacy import sanitize_provider_text
from stream_app.providers.dialects import raise_for_answer
from stream_app.settings import Settings

_MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, repr=False)
class RefreshedTokens:
    """Plain-text tokens fresh from a provider. Never logged: ``repr`` shows no token."""

    access_token: str
    refresh_token: str | None
    expires_in: int | None
    scope: str | None

    def __repr__(self) -> str:
        return f"RefreshedTokens(expires_in={self.expires_in}, rotated={self.refresh_token is not None})"


def build_http_client(settings: Settings, *, max_connections: int = 500) -> httpx.AsyncClient:
    """The process's one HTTP client: httpx's API over aiohttp's connection pool, which holds
    up under hundreds of concurrent requests where httpx's own pool collapses (encode/httpx#3215)."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return httpx.AsyncClient(
        transport=AiohttpTransport(limits=limits),
        timeout=httpx.Timeout(settings.http_timeout_seconds),
        headers={"User-Agent": "token-refresh/0.1"},
    )


class ProviderClient:
    def __init__(self, http: httpx.AsyncClient, settings: Settings) -> None:
        self._http = http
        self._settings = settings

    def token_url(self, spec: PlatformSpec) -> str | None:
        return self._settings.token_urls.get(spec.credential_key, spec.token_url)

    async def refresh(self, spec: PlatformSpec, refresh_token: str) -> RefreshedTokens:
        """One attempt. Raises a ``ProviderError`` subclass on anything but fresh tokens."""
        credentials = self._settings.credentials.get(spec.credential_key)
        url = self.token_url(spec)
        if credentials is None or url is None:
            raise InvalidClientError(f"no client credentials configured ({spec.credential_key.upper()}_CLIENT_ID)")
        secret = credentials.client_secret.get_secret_value()
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, **spec.refresh_params}
        auth = httpx.Auth()  # the base class adds nothing: credentials go in the form
        if spec.auth_method == "basic":
            auth = httpx.BasicAuth(credentials.client_id, secret)
        else:
            form |= {"client_id": credentials.client_id, "client_secret": secret}
        headers = {"Accept": "application/json", **spec.headers}
        try:
            response = await self._http.post(url, data=form, auth=auth, headers=headers)
            content = await _bounded_body(response)
        except httpx.TransportError as exc:
            raise ProviderNetworkError(f"{type(exc).__name__} calling the token endpoint") from None
        body = _json_or_none(content)
        raise_for_answer(
            spec.dialect,
            response.status_code,
            response.headers,
            body,
            default_wait=self._settings.rate_limit_default_wait_seconds,
            sanitize=lambda text: sanitize_provider_text(text, (refresh_token, secret)),
        )
        return _tokens_from(body, spec)


async def _bounded_body(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > _MAX_BODY_BYTES:
            break
        chunks.append(chunk)
    await response.aclose()
    return b"".join(chunks)


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None


def _tokens_from(body: dict[str, Any], spec: PlatformSpec) -> RefreshedTokens:
    refresh_token = body.get("refresh_token")
    scope = body.get("scope")
    return RefreshedTokens(
        access_token=body["access_token"],
        refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else None,
        expires_in=_seconds(body.get("expires_in"), spec.default_expires_in),
        scope=scope if isinstance(scope, str) else None,
    )


def _seconds(value: Any, default: int | None) -> int | None:
    """``expires_in`` as whole seconds; some providers send it as a string or a float."""
    try:
        seconds = int(float(value))
    except (TypeError, ValueError):
        return default
    return seconds if seconds > 0 else default
