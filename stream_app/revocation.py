"""RFC 7009 token revocation at the provider, for a disconnected connection.

``POST <revocation URL>`` with ``token=<token>&token_type_hint=<refresh_token|access_token>``,
the client authenticated as the catalog says (``basic``, ``form``, or ``none`` for Google's
endpoint). What comes back is a :class:`Revocation`, never an exception: ``revoked`` (2xx),
``already_invalid`` (the provider no longer knows the token: Google's 400 ``invalid_token``),
or ``failed`` with an error class and a description of our own. A provider's free text goes
nowhere; its error code only when it is short, well formed and quotes no secret
(``stream_app.providers.wording``), as with refresh errors. Network errors and 5xx are retried
REFRESH_MAX_ATTEMPTS times (RFC 7009 2.2.1: 503 means try later); nothing else is.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from schemas.events import RevocationOutcome
from stream_app.backoff import Backoff
from stream_app.catalog import PlatformSpec, RevokedTokenType
from stream_app.privacy import sanitize_provider_text
from stream_app.providers.client import USER_AGENT, basic_pair, post_form
from stream_app.providers.wording import shown_code
from stream_app.settings import Settings

log = logging.getLogger(__name__)

# Codes meaning the token is already dead at the provider: nothing left to revoke.
_ALREADY_INVALID = frozenset({"invalid_token", "invalid_grant"})
_CLIENT_REFUSED = frozenset({"invalid_client", "unauthorized_client"})
_WORDS = {
    "invalid_client": "the provider refused our client credentials at its revocation endpoint",
    "rate_limited": "the provider's revocation endpoint is rate limiting us",
    "server_error": "the provider's revocation endpoint failed",
    "network": "the provider's revocation endpoint did not answer",
    "unsupported_token_type": "the provider does not revoke this type of token",
    "unknown_error": "the provider refused the revocation with an answer this service does not know",
}


@dataclass(frozen=True)
class Revocation:
    outcome: RevocationOutcome
    token_type: RevokedTokenType | None = None
    error_class: str | None = None
    error: str | None = None

    @property
    def settled(self) -> bool:
        """Whether nothing is left to revoke with the stored tokens (then they may be wiped)."""
        return self.outcome != "failed"


class _Retryable(Exception):
    def __init__(self, revocation: Revocation) -> None:
        self.revocation = revocation


class RevocationClient:
    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        settings: Settings,
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._transport = transport
        self._settings = settings
        self._backoff = Backoff.from_settings(settings)
        self._sleep = sleep

    def url(self, spec: PlatformSpec) -> str | None:
        """The endpoint to call: an override, else the catalog's, unless the platform's token URL
        is overridden (a sandbox, a proxy): tokens it issued never go to the real provider."""
        if spec.revocation_url is None:
            return None  # an override cannot give a platform an endpoint the catalog says it lacks
        override = self._settings.revocation_urls.get(spec.credential_key)
        if override is None and spec.credential_key in self._settings.token_urls:
            return None
        return override or spec.revocation_url

    async def revoke(self, spec: PlatformSpec, *, refresh_token: str | None, access_token: str | None) -> Revocation:
        """Revoke the grant behind the stored tokens (plain text), as well as the platform allows."""
        if not self._settings.revoke_tokens_on_disconnect:
            return Revocation("disabled")
        url = self.url(spec)
        if url is None:
            return Revocation("unsupported" if spec.revocation_url is None else "unconfigured")
        chosen = _chosen_token(spec.revoked_token_type, refresh_token, access_token)
        if chosen is None:
            return Revocation("no_token")
        token_type, token = chosen
        failures = 0
        while True:
            try:
                return await self._once(spec, url, token_type, token)
            except _Retryable as retry:
                failures += 1
                if failures > self._settings.refresh_max_attempts:
                    return retry.revocation
                await self._sleep(self._backoff.delay(failures))

    async def _once(self, spec: PlatformSpec, url: str, token_type: RevokedTokenType, token: str) -> Revocation:
        form = {"token": token, "token_type_hint": token_type}
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **spec.headers}
        sent: tuple[str, ...] = (token,)
        if spec.revocation_auth != "none":
            credentials = self._settings.credentials.get(spec.credential_key)
            if credentials is None:
                return _failed(
                    token_type,
                    "invalid_client",
                    f"no client credentials configured ({spec.credential_key.upper()}_CLIENT_ID)",
                )
            secret = credentials.client_secret.get_secret_value()
            pair = basic_pair(credentials.client_id, secret)
            sent = (token, secret, f"{credentials.client_id}:{secret}", pair)
            if spec.revocation_auth == "basic":
                headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
            else:
                form |= {"client_id": credentials.client_id, "client_secret": secret}
        deadline = self._settings.http_timeout_seconds
        try:
            status, _headers, content = await post_form(self._transport, url, form, headers, deadline)
        except (TimeoutError, httpx.TimeoutException):
            raise _Retryable(_failed(token_type, "network", f"{_WORDS['network']} within {deadline:g}s")) from None
        except Exception as exc:  # the call's failure, named by type only (its text may quote the answer)
            raise _Retryable(_failed(token_type, "network", f"{_WORDS['network']} ({type(exc).__name__})")) from None
        return _reading(token_type, status, content, lambda text: sanitize_provider_text(text, sent))


def _chosen_token(
    preferred: RevokedTokenType, refresh_token: str | None, access_token: str | None
) -> tuple[RevokedTokenType, str] | None:
    tokens: dict[RevokedTokenType, str | None] = {"refresh_token": refresh_token, "access_token": access_token}
    for token_type in (preferred, "access_token" if preferred == "refresh_token" else "refresh_token"):
        token = tokens[token_type]
        if token:
            return token_type, token
    return None


def _reading(
    token_type: RevokedTokenType, status: int, content: bytes | None, sanitize: Callable[[str], str]
) -> Revocation:
    if 200 <= status < 300:
        return Revocation("revoked", token_type)
    code = _error_code(content)
    if status == 400 and code in _ALREADY_INVALID:
        return Revocation("already_invalid", token_type)
    if status == 429:
        error_class = "rate_limited"
    elif status >= 500:
        raise _Retryable(_failed(token_type, "server_error", _described(code, "server_error", status, sanitize)))
    elif status == 401 or code in _CLIENT_REFUSED:
        error_class = "invalid_client"
    elif code == "unsupported_token_type":
        error_class = "unsupported_token_type"
    else:
        error_class = "unknown_error"
    return _failed(token_type, error_class, _described(code, error_class, status, sanitize))


def _error_code(content: bytes | None) -> str | None:
    try:
        body = json.loads(content or b"")
    except (ValueError, RecursionError):
        return None
    code = body.get("error") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def _described(code: str | None, error_class: str, status: int, sanitize: Callable[[str], str]) -> str:
    return f"{shown_code(code, error_class, sanitize)}: {_WORDS[error_class]} (HTTP {status})"


def _failed(token_type: RevokedTokenType, error_class: str, error: str) -> Revocation:
    return Revocation("failed", token_type, error_class, error)
