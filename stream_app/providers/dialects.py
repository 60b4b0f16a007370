"""Each provider's way of saying "no", mapped onto the contract's classes.

A dialect turns a token-endpoint response into an error code (or None for success);
``raise_for_answer`` then maps the code and the HTTP status onto the exception tree of
``stream_app.errors``. Most providers speak RFC 6749; the others differ as providers.md
describes (errors inside a 200, Twitch's ``{status, message}``, "bad refresh token"
spelled ``invalid_request``).
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from stream_app.errors import (
    InvalidClientError,
    ProviderRateLimited,
    ProviderServerError,
    ReauthRequiredError,
)

# A provider asking for more than an hour is misbehaving; the scan will come back anyway.
MAX_RETRY_AFTER_SECONDS = 3600.0
# A reset value this large is a point in time (epoch seconds), not a number of seconds.
_EPOCH_THRESHOLD = 1e9


class Reading(NamedTuple):
    """What a token-endpoint answer says: ``meaning`` is the code it is classified by (None:
    no error), ``said`` the provider's own code and description, kept for the record."""

    meaning: str | None
    said: str = ""


Dialect = Callable[[int, Any], Reading]

BAD_GRANT_CODES = frozenset(
    {"invalid_grant", "bad_refresh_token", "invalid_refresh_token", "token_revoked", "token_expired"}
)
BAD_CLIENT_CODES = frozenset(
    {
        "invalid_client",
        "unauthorized_client",
        "incorrect_client_credentials",
        "bad_client_secret",
        "invalid_client_id",
    }
)


def _said(code: str, description: str) -> str:
    return f"{code}: {description}" if description else code


def _rfc6749(status: int, body: Any) -> Reading:
    if isinstance(body, Mapping) and isinstance(body.get("error"), str):
        code = body["error"]
        return Reading(code, _said(code, str(body.get("error_description") or "")))
    if status >= 400:
        return Reading("http_error", f"HTTP {status}")
    return Reading(None)


def _invalid_request_is_bad_grant(status: int, body: Any) -> Reading:
    """X, LinkedIn and Reddit answer a dead refresh token with ``invalid_request``."""
    reading = _rfc6749(status, body)
    if reading.meaning == "invalid_request" and status == 400:
        return reading._replace(meaning="invalid_grant")
    if reading.meaning == "http_error" and status == 401:  # Reddit: 401, no body, WWW-Authenticate
        return reading._replace(meaning="invalid_client")
    return reading


def _slack(status: int, body: Any) -> Reading:
    if isinstance(body, Mapping) and body.get("ok") is False:
        code = str(body.get("error") or "unknown_error")
        return Reading(code, code)
    return _rfc6749(status, body)


def _twitch(status: int, body: Any) -> Reading:
    """Twitch answers ``{"status": 400, "message": "Invalid refresh token"}``, with no code."""
    if isinstance(body, Mapping) and "message" in body and "error" not in body:
        message = str(body["message"])
        lowered = message.lower()
        if "refresh token" in lowered:
            return Reading("invalid_grant", message)
        if "client" in lowered or status == 403:
            return Reading("invalid_client", message)
        return Reading("unknown_error", message)
    return _rfc6749(status, body)


DIALECTS: dict[str, Dialect] = {
    "rfc6749": _rfc6749,
    "spotify": _rfc6749,  # its invalid_client comes as a 400, which the code already says
    "google": _rfc6749,
    "github_app": _rfc6749,  # errors arrive inside a 200; the body decides
    "invalid_request_is_bad_grant": _invalid_request_is_bad_grant,
    "slack": _slack,
    "twitch": _twitch,
}


def raise_for_answer(
    dialect: str,
    status: int,
    headers: Mapping[str, str],
    body: Any,
    *,
    default_wait: float,
    sanitize: Callable[[str], str],
) -> None:
    """Raise the error this answer means; return quietly when it carries a token."""
    if status == 429:
        raise ProviderRateLimited(
            "rate limited",
            status_code=status,
            retry_after=retry_after_seconds(headers, body),
            platform_wide=_platform_wide(headers, body),
        )
    if status >= 500:
        raise ProviderServerError(f"server error {status}", status_code=status)
    code, said = DIALECTS[dialect](status, body)
    if status == 403 and code not in BAD_GRANT_CODES | BAD_CLIENT_CODES:
        # Throttling, not a verdict on the grant: Google has answered with a 403 HTML page
        # and no Retry-After, others with JSON such as {"error": "rate_limit_exceeded"}.
        wait = retry_after_seconds(headers, body)
        raise ProviderRateLimited(
            "forbidden (throttled)", status_code=status, retry_after=wait if wait is not None else default_wait
        )
    if code is None:
        if isinstance(body, Mapping) and isinstance(body.get("access_token"), str):
            return
        code = said = "malformed_response"
    text = sanitize(said or code)
    if code in BAD_GRANT_CODES:
        raise ReauthRequiredError(text, reason="invalid_grant", status_code=status)
    if code in BAD_CLIENT_CODES:
        raise InvalidClientError(text, status_code=status)
    raise ReauthRequiredError(text, reason="unknown_error", status_code=status)


def _platform_wide(headers: Mapping[str, str], body: Any) -> bool:
    """Discord says ``"global": true`` in the body (and ``X-RateLimit-Global``); others may send
    ``X-RateLimit-Scope: global``."""
    lowered = {name.lower(): value.lower() for name, value in headers.items()}
    return (
        (isinstance(body, Mapping) and body.get("global") is True)
        or lowered.get("x-ratelimit-global") == "true"
        or lowered.get("x-ratelimit-scope") == "global"
    )


def retry_after_seconds(headers: Mapping[str, str], body: Any, *, now: float | None = None) -> float | None:
    """How long the provider asked us to wait, at most MAX_RETRY_AFTER_SECONDS; None if unsaid
    or unreadable (non-finite values included)."""
    wait = _requested_wait(headers, body, time.time() if now is None else now)
    if wait is None or not math.isfinite(wait):
        return None
    return min(max(0.0, wait), MAX_RETRY_AFTER_SECONDS)


def _requested_wait(headers: Mapping[str, str], body: Any, now: float) -> float | None:
    """The wait in any of the styles in use: Discord's float ``retry_after`` in the body,
    ``Retry-After`` as seconds or an HTTP date, X's ``x-rate-limit-reset`` epoch seconds,
    Discord's ``X-RateLimit-Reset-After`` seconds, and ``X-RateLimit-Reset``: seconds from
    Reddit, epoch seconds from Discord."""
    lowered = {name.lower(): value for name, value in headers.items()}
    if isinstance(body, Mapping) and isinstance(body.get("retry_after"), int | float):
        return float(body["retry_after"])
    retry_after = lowered.get("retry-after")
    if retry_after:
        seconds = _number(retry_after)
        if seconds is not None:
            return seconds
        with contextlib.suppress(TypeError, ValueError):
            when = email.utils.parsedate_to_datetime(retry_after)
            if when.tzinfo is not None:
                return when.timestamp() - now
    reset_at = _number(lowered.get("x-rate-limit-reset"))  # X: epoch seconds
    if reset_at is not None:
        return reset_at - now
    reset_after = _number(lowered.get("x-ratelimit-reset-after"))  # Discord: seconds
    if reset_after is not None:
        return reset_after
    reset = _number(lowered.get("x-ratelimit-reset"))  # Reddit: seconds; Discord: epoch seconds
    if reset is not None:
        return reset - now if reset > _EPOCH_THRESHOLD else reset
    return None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None
