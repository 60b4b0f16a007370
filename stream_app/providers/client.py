"""One refresh_token grant request to a provider, answered as tokens or a typed error.

Whatever happens during the call ends as tokens or a ``ProviderError``: library errors are
translated here, with messages that name only their type (never response text), and the whole
exchange (connect, send, the complete answer) must end within ``HTTP_TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import aiohttp
import httpx

from stream_app.catalog import PlatformSpec
from stream_app.errors import InvalidClientError, ProviderError, ProviderNetworkError, ProviderUnexpectedAnswer
from stream_app.privacy import sanitize_provider_text
from stream_app.providers.dialects import raise_for_answer
from stream_app.settings import Settings

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
# An expires_in beyond this is nonsense (and would overflow a date, or the table's 32-bit
# token_lifetime_seconds): read as unsaid, the platform's default lifetime.
MAX_EXPIRES_IN_SECONDS = 10 * 365 * 24 * 3600
# An integer literal longer than this in an answer is read as infinite, not refused with the
# whole answer (Python refuses over 4300 digits): the tokens beside it are still stored.
_MAX_INTEGER_DIGITS = 30
# The connection failed or broke off: the answer never (fully) arrived.
_TRANSPORT_ERRORS = (httpx.TransportError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError)
# Something arrived, but not HTTP we can read: a bad status line or header, a body that does
# not decode (httpx_aiohttp lets aiohttp.ClientResponseError through unmapped).
_MALFORMED_ANSWER_ERRORS = (httpx.HTTPError, httpx.StreamError, aiohttp.ClientError)


@dataclass(frozen=True, repr=False)
class RefreshedTokens:
    """Plain-text tokens fresh from a provider. Never logged: ``repr`` shows no token."""

    access_token: str
    refresh_token: str | None
    expires_in: int | None
    scope: str | None

    def __repr__(self) -> str:
        return f"RefreshedTokens(expires_in={self.expires_in}, rotated={self.refresh_token is not None})"


USER_AGENT = "token-refresh/0.1"


async def post_form(
    transport: httpx.AsyncBaseTransport,
    url: str | httpx.URL,
    form: dict[str, str],
    headers: dict[str, str],
    deadline: float,
) -> tuple[int, httpx.Headers, bytes | None]:
    """POST ``form`` and read the whole answer within ``deadline`` seconds: its status, headers
    and body (None when over MAX_BODY_BYTES). Library errors are the caller's to translate."""
    timeout = httpx.Timeout(deadline).as_dict()
    request = httpx.Request("POST", url, data=form, headers=headers, extensions={"timeout": timeout})
    async with asyncio.timeout(deadline):
        response = await transport.handle_async_request(request)
        try:
            return response.status_code, response.headers, await _bounded_body(response)
        finally:
            await response.aclose()


class ProviderClient:
    def __init__(self, transport: httpx.AsyncBaseTransport, settings: Settings) -> None:
        self._transport = transport
        self._settings = settings
        self._urls: dict[str, httpx.URL] = {}

    def token_url(self, spec: PlatformSpec) -> str | None:
        return self._settings.token_urls.get(spec.credential_key, spec.token_url)

    def _parsed(self, url: str) -> httpx.URL:
        """``url`` parsed once (a few token URLs, each parsed per request was 3% of a worker's CPU)."""
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = self._urls[url] = httpx.URL(url)
        return parsed

    async def refresh(self, spec: PlatformSpec, refresh_token: str) -> RefreshedTokens:
        """One attempt. Raises a ``ProviderError`` subclass on anything but fresh tokens."""
        credentials = self._settings.credentials.get(spec.credential_key)
        url = self.token_url(spec)
        if credentials is None or url is None:
            raise InvalidClientError(f"no client credentials configured ({spec.credential_key.upper()}_CLIENT_ID)")
        secret = credentials.client_secret.get_secret_value()
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, **spec.refresh_params}
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **spec.headers}
        if spec.auth_method == "basic":
            headers["Authorization"] = _basic_auth(credentials.client_id, secret)
        else:
            form |= {"client_id": credentials.client_id, "client_secret": secret}
        # A single-use token is spent once the request is out: its answer is worth a longer wait.
        deadline = self._settings.http_timeout_seconds
        if spec.single_use_refresh_tokens:
            deadline = self._settings.longest_call_seconds
        status, answer_headers, content = await self._exchange(url, form, headers, deadline)
        body = None if content is None else _json_or_none(content)
        if content is None and 200 <= status < 300:
            raise ProviderUnexpectedAnswer(f"HTTP {status} answer over {MAX_BODY_BYTES} bytes", status_code=status)
        # What the provider may echo: the token, the secret, and the pair a Basic header encodes.
        sent = (refresh_token, secret, f"{credentials.client_id}:{secret}", basic_pair(credentials.client_id, secret))
        try:
            raise_for_answer(
                spec.dialect,
                status,
                answer_headers,
                body,
                default_wait=self._settings.rate_limit_default_wait_seconds,
                sanitize=lambda text: sanitize_provider_text(text, sent),
            )
            return _tokens_from(body, spec)
        except ProviderError:
            raise
        except Exception as exc:  # reading the answer must end as tokens or a ProviderError
            log.warning("reading a token endpoint's answer failed with an unexpected %s", type(exc).__name__)
            raise ProviderUnexpectedAnswer(f"{type(exc).__name__} reading the answer", status_code=status) from None

    async def _exchange(
        self, url: str, form: dict[str, str], headers: dict[str, str], deadline: float
    ) -> tuple[int, httpx.Headers, bytes | None]:
        """``post_form`` within ``deadline``, its failures as ``ProviderError``s."""
        try:
            return await post_form(self._transport, self._parsed(url), form, headers, deadline)
        except (TimeoutError, httpx.TimeoutException):
            raise ProviderNetworkError(f"timeout: no complete answer within {deadline:g}s") from None
        except _TRANSPORT_ERRORS as exc:
            raise ProviderNetworkError(f"{type(exc).__name__} calling the token endpoint") from None
        except _MALFORMED_ANSWER_ERRORS as exc:
            raise ProviderUnexpectedAnswer(f"{type(exc).__name__}: malformed answer from the token endpoint") from None
        except Exception as exc:
            # Not one the libraries document; still the call's failure, never the caller's crash
            # (the engine's circuit breaker waits for every call's outcome). Its text may quote
            # the answer, so only its type is kept.
            log.warning("token endpoint call failed with an unexpected %s", type(exc).__name__)
            raise ProviderUnexpectedAnswer(f"{type(exc).__name__} during the token endpoint call") from None


def basic_pair(client_id: str, secret: str) -> str:
    """What ``Authorization: Basic`` encodes: each part form-urlencoded first (RFC 6749 2.3.1,
    as Authlib and the providers' own decoding do), so a secret holding ``+``, ``%``, ``:`` or a
    space reaches the provider as it is."""
    return f"{quote_plus(client_id)}:{quote_plus(secret)}"


def _basic_auth(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(basic_pair(client_id, secret).encode()).decode("ascii")


async def _bounded_body(response: httpx.Response) -> bytes | None:
    """The body, or None once it grows over MAX_BODY_BYTES (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except RecursionError:  # deep nesting
        return None
    except ValueError:  # not JSON (UnicodeDecodeError included), or an integer over 4300 digits
        pass
    try:
        return json.loads(content, parse_int=_bounded_int)
    except (ValueError, RecursionError):
        return None


def _bounded_int(literal: str) -> int | float:
    """A JSON integer; one too long to mean anything is infinite (signed), never an error."""
    if len(literal.lstrip("-")) > _MAX_INTEGER_DIGITS:
        return -math.inf if literal.startswith("-") else math.inf
    return int(literal)


def _tokens_from(body: Any, spec: PlatformSpec) -> RefreshedTokens:
    """From an answer ``raise_for_answer`` let through: a mapping with a non-empty access_token."""
    refresh_token = body.get("refresh_token")
    scope = body.get("scope")
    return RefreshedTokens(
        access_token=body["access_token"],
        refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else None,
        expires_in=_seconds(body.get("expires_in"), spec.default_expires_in),
        scope=scope if isinstance(scope, str) else None,
    )


def _seconds(value: Any, default: int | None) -> int | None:
    """``expires_in`` as whole seconds; some providers send it as a string or a float.
    Anything unreadable, not positive or absurdly large is unsaid: the default."""
    if isinstance(value, bool):
        return default
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):
        return default
    if not math.isfinite(seconds) or not 1 <= seconds <= MAX_EXPIRES_IN_SECONDS:
        return default
    return int(seconds)
