"""Each provider's way of saying "no", mapped onto the contract's classes.

A dialect reads a token-endpoint answer as an OAuth error code (or None: the answer carries
no code); ``raise_for_answer`` then maps the code and the HTTP status onto the exception tree
of ``stream_app.errors``. Most providers speak RFC 6749; the others differ as providers.md
describes (errors inside a 200, Twitch's ``{status, message}``, "bad refresh token" spelled
``invalid_request``, Google's 403 HTML page when it throttles).

Only a code judges a grant. An answer without one (an empty 401, a gateway's HTML page, a 200
without a token) says nothing about the user, so it never marks anyone ``needs_reauth``: it is
the provider's trouble (``unexpected_response``, retried), with two documented exceptions:
RFC 6749 §5.2's 401 with a ``Basic`` challenge (Reddit's bad client) refuses our client, and
Google's bare 403 page is throttling. A 403 is throttling only when it says so.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from stream_app.errors import (
    InvalidClientError,
    ProviderError,
    ProviderRateLimited,
    ProviderServerError,
    ProviderUnexpectedAnswer,
    ReauthRequiredError,
)
from stream_app.providers.wording import describe, shown_code

log = logging.getLogger(__name__)

# A provider asking for more than an hour is misbehaving; the scan will come back anyway.
MAX_RETRY_AFTER_SECONDS = 3600.0
# A reset value this large is a point in time (epoch seconds), not a number of seconds.
_EPOCH_THRESHOLD = 1e9


class Reading(NamedTuple):
    """What a token-endpoint answer says: ``meaning`` is the code it is classified by (None:
    the answer carries no error code), ``said`` the provider's own words (never stored nor
    published: a scrubbed DEBUG line at most), ``code`` the provider's own code as it sent it."""

    meaning: str | None
    said: str = ""
    code: str | None = None


NO_CODE = Reading(None)

Dialect = Callable[[int, Any], Reading]

BAD_GRANT_CODES = frozenset(
    {"invalid_grant", "bad_refresh_token", "invalid_refresh_token", "token_revoked", "token_expired"}
)
# The user withdrew the application's access: a verdict on the grant, with its own reason.
CONSENT_WITHDRAWN_CODES = frozenset({"access_denied"})
BAD_CLIENT_CODES = frozenset(
    {
        "invalid_client",
        "unauthorized_client",
        "incorrect_client_credentials",
        "bad_client_secret",
        "invalid_client_id",
    }
)
# Codes that ask us to slow down, whatever the status (compared lower-cased): OAuth's
# slow_down, Slack's ratelimited, Google APIs' reasons.
THROTTLING_CODES = frozenset(
    {
        "rate_limit_exceeded",
        "ratelimited",
        "slow_down",
        "too_many_requests",
        "userratelimitexceeded",
        "ratelimitexceeded",
        "quotaexceeded",
        "dailylimitexceeded",
        "resource_exhausted",
    }
)
# Codes that say the server failed, not the grant (RFC 6749 §4.1.2.1, Slack's own).
SERVER_TROUBLE_CODES = frozenset(
    {
        "server_error",
        "temporarily_unavailable",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
    }
)
# Headers that say a quota is spent (GitHub, X, Twitch, the IETF draft).
_REMAINING_HEADERS = ("x-ratelimit-remaining", "x-rate-limit-remaining", "ratelimit-remaining")
# The media types an answer's is named by in the record; any other is "another media type"
# (a header is the provider's text too).
_KNOWN_MEDIA_TYPES = frozenset(
    {
        "application/json",
        "application/problem+json",
        "application/x-www-form-urlencoded",
        "application/xml",
        "text/html",
        "text/plain",
        "text/xml",
    }
)


def _said(code: str, description: str) -> str:
    return f"{code}: {description}" if description else code


def _rfc6749(status: int, body: Any) -> Reading:
    if not isinstance(body, Mapping):
        return NO_CODE
    error = body.get("error")
    if isinstance(error, str) and error:
        return Reading(error, _said(error, str(body.get("error_description") or "")), error)
    if isinstance(error, Mapping):
        return _api_error(error)
    return NO_CODE


def _api_error(error: Mapping[str, Any]) -> Reading:
    """Google APIs' ``{"error": {"code", "message", "status", "errors": [{"reason"}]}}``: not an
    OAuth code, but it can say it is a rate limit, by a reason or in words."""
    details = error.get("errors")
    reasons = [item.get("reason") for item in details if isinstance(item, Mapping)] if isinstance(details, list) else []
    for reason in (*reasons, error.get("status")):
        if isinstance(reason, str) and reason.lower() in THROTTLING_CODES:
            return Reading(reason, reason, reason)
    message = error.get("message")
    if isinstance(message, str) and ("rate limit" in message.lower() or "quota" in message.lower()):
        return Reading("rate_limit_exceeded", "rate_limit_exceeded")
    return NO_CODE


def _google(status: int, body: Any) -> Reading:
    """Google has throttled with a 403 HTML page and no Retry-After (providers.md)."""
    reading = _rfc6749(status, body)
    if reading.meaning is None and status == 403 and not isinstance(body, Mapping):
        return Reading("rate_limit_exceeded", "HTTP 403 page")
    return reading


def _invalid_request_is_bad_grant(status: int, body: Any) -> Reading:
    """X, LinkedIn and Reddit answer a dead refresh token with ``invalid_request``. (Reddit's
    bare 401 for a bad client is RFC 6749 §5.2's Basic challenge, read in ``raise_for_answer``.)"""
    reading = _rfc6749(status, body)
    if reading.meaning == "invalid_request" and status == 400:
        return reading._replace(meaning="invalid_grant")
    return reading


def _slack(status: int, body: Any) -> Reading:
    if isinstance(body, Mapping) and body.get("ok") is False:
        code = body.get("error")
        return Reading(code, code, code) if isinstance(code, str) and code else NO_CODE
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
    "google": _google,
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
    lowered = {name.lower(): value for name, value in headers.items()}
    code, said, own_code = DIALECTS[dialect](status, body)
    if code is None:
        _judge_codeless(status, lowered, body, default_wait)
        return
    if code.lower() in THROTTLING_CODES:
        raise _throttled(f"throttled ({code.lower()})", status, headers, body, default_wait)
    if code in SERVER_TROUBLE_CODES:
        raise ProviderServerError(f"server error {status} ({code})", status_code=status)
    if said:
        log.debug("Token endpoint's own words (HTTP %s, scrubbed): %s", status, sanitize(said))
    raise _verdict(code, own_code, status, sanitize)


def _verdict(meaning: str, own_code: str | None, status: int, sanitize: Callable[[str], str]) -> ProviderError:
    """The refusal ``meaning`` classifies, described by its code and our own words only."""
    if meaning in BAD_CLIENT_CODES:
        error_class = "invalid_client"
    elif meaning in BAD_GRANT_CODES:
        error_class = "invalid_grant"
    elif meaning in CONSENT_WITHDRAWN_CODES:
        error_class = "access_denied"
    else:
        error_class = "unknown_error"
    text = describe(shown_code(own_code, error_class, sanitize), meaning, error_class, status)
    if error_class == "invalid_client":
        return InvalidClientError(text, status_code=status)
    return ReauthRequiredError(text, reason=error_class, status_code=status)


def _judge_codeless(status: int, headers: Mapping[str, str], body: Any, default_wait: float) -> None:
    """An answer with no error code: a token, or a failure that judges no grant."""
    if 200 <= status < 300:
        if _has_access_token(body):
            return
        raise ProviderUnexpectedAnswer(
            f"malformed_response: HTTP {status} with neither an access_token nor an error code", status_code=status
        )
    if status == 403 and _asks_to_wait(headers, body):
        raise _throttled("forbidden (throttled)", status, headers, body, default_wait)
    if status == 401 and headers.get("www-authenticate", "").lstrip().lower().startswith("basic"):
        # RFC 6749 §5.2: client authentication failed (Reddit's only way of saying it).
        text = describe("invalid_client", "invalid_client", "invalid_client", status, how="Basic challenge")
        raise InvalidClientError(text, status_code=status)
    raise ProviderUnexpectedAnswer(
        f"unexpected answer: HTTP {status} with no OAuth error code ({_media_type(headers)})", status_code=status
    )


def _has_access_token(body: Any) -> bool:
    token = body.get("access_token") if isinstance(body, Mapping) else None
    return isinstance(token, str) and bool(token.strip())


def _asks_to_wait(headers: Mapping[str, str], body: Any) -> bool:
    """A Retry-After (header or Discord's body field) or a rate-limit quota at zero."""
    return (
        "retry-after" in headers
        or _body_wait(body) is not None
        or any(headers.get(name, "").strip() == "0" for name in _REMAINING_HEADERS)
    )


def _throttled(
    description: str, status: int, headers: Mapping[str, str], body: Any, default_wait: float
) -> ProviderRateLimited:
    wait = retry_after_seconds(headers, body)
    return ProviderRateLimited(
        description,
        status_code=status,
        retry_after=wait if wait is not None else default_wait,
        platform_wide=_platform_wide(headers, body),
    )


def _media_type(headers: Mapping[str, str]) -> str:
    """The answer's media type for the record, if it is a common one (nothing else of a header
    is kept)."""
    value = headers.get("content-type", "").split(";")[0].strip().lower()
    if not value:
        return "no content type"
    return value if value in _KNOWN_MEDIA_TYPES else "another media type"


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
    in_body = _body_wait(body)
    if in_body is not None:
        return in_body
    retry_after = lowered.get("retry-after")
    if retry_after:
        seconds = _number(retry_after)
        if seconds is not None:
            return seconds
        # A date beyond datetime's range, or a zone offset of a hundred digits: unsaid.
        with contextlib.suppress(TypeError, ValueError, OverflowError):
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


def _body_wait(body: Any) -> float | None:
    """Discord's ``retry_after``: a JSON number in the body."""
    value = body.get("retry_after") if isinstance(body, Mapping) else None
    return _number(value) if isinstance(value, int | float) else None


def _number(value: object) -> float | None:
    """A number of seconds from a header's text or a JSON number; None for anything else
    (a bool, words, an integer too large for a float). Not yet bounded: may be inf or NaN."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        return float(value) if value != "" else None
    except (ValueError, OverflowError):
        return None
