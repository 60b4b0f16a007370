"""The refresh_token grant, as pure functions: a parsed request in, an :class:`Answer` out.

No I/O and no awaits: :func:`handle_refresh` checks and spends the refresh token in one
synchronous call, so concurrent requests on the server's event loop cannot interleave.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus, urlencode

from .dialects import (
    GOOGLE,
    PLATFORMS,
    Answer,
    AuthMethod,
    Dialect,
    RateLimitStyle,
    credential_key,
    default_credentials,
    rfc,
)
from .state import Fault, FaultMode, Grant, RefreshResult, SandboxState, Verdict

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

# First product of a User-Agent that an HTTP library sends by default (Reddit rejects these).
_GENERIC_AGENT = re.compile(
    r"^\s*(python-httpx|httpx|python-requests|python-urllib|python|aiohttp|curl|wget|"
    r"go-http-client|okhttp|java|node-fetch|node|axios|undici|libwww-perl|postmanruntime)"
    r"(/|\s|$)",
    re.IGNORECASE,
)

_GOOGLE_403_PAGE = """<!DOCTYPE html>
<html lang=en>
  <meta charset=utf-8>
  <title>Error 403 (Forbidden)!!1</title>
  <p><b>403.</b> <ins>That\u2019s an error.</ins>
  <p>We're sorry, but you do not have access to this page. <ins>That\u2019s all we know.</ins>
"""


class Clients:
    """Valid (client_id, client_secret) pairs per credential key (a platform, or ``google``).

    ``credentials`` maps a platform key (or ``google``) to ``(client_id, client_secret)``;
    a Google key configures the one client the three Google platforms share.
    """

    def __init__(self, credentials: Mapping[str, tuple[str, str]] | None = None) -> None:
        self._pairs: dict[str, tuple[str, str]] = {}
        for platform, pair in (credentials or {}).items():
            if platform != GOOGLE and platform not in PLATFORMS:
                raise ValueError(f"credentials for unknown platform {platform!r}")
            client_id, client_secret = pair
            self._pairs[credential_key(platform)] = (str(client_id), str(client_secret))

    def for_platform(self, platform: str) -> tuple[str, str]:
        key = credential_key(platform)
        return self._pairs.get(key) or default_credentials(key)

    def valid(self, route: str, pair: tuple[str, str]) -> bool:
        return self.for_platform(route) == pair


@dataclass(frozen=True)
class TokenRequest:
    route: str  # the platform key in the path, or "google"
    headers: Mapping[str, str]  # lower-case names
    form: Mapping[str, str]  # the parsed body ({} when it was not a readable form)

    @property
    def refresh_token(self) -> str | None:
        return self.form.get("refresh_token") or None


@dataclass(frozen=True)
class Outcome:
    answer: Answer
    outcome: str  # for stats and logs: success, reused_refresh_token, invalid_client...
    grant: Grant | None = None
    auth_method: str | None = None
    rotated: bool = False


def effective_platform(route: str, dialect: Dialect, grant: Grant | None) -> str:
    """The platform a request is about: the grant's, when the token belongs to this dialect."""
    if grant is not None and grant.dialect == dialect.name:
        return grant.platform
    return route


def presented_client(
    dialect: Dialect, headers: Mapping[str, str], form: Mapping[str, str]
) -> tuple[str, tuple[str, str]] | None:
    """(method, (client_id, client_secret)) by a method ``dialect`` accepts, or None."""
    auth = headers.get("authorization", "")
    if AuthMethod.BASIC in dialect.auth_methods and auth[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return AuthMethod.BASIC.value, ("", "")
        client_id, _, secret = decoded.partition(":")
        return AuthMethod.BASIC.value, (unquote_plus(client_id), unquote_plus(secret))
    if AuthMethod.FORM in dialect.auth_methods and form.get("client_id") and form.get("client_secret"):
        return AuthMethod.FORM.value, (form["client_id"], form["client_secret"])
    return None


def descriptive_user_agent(value: str | None) -> bool:
    return bool(value and value.strip()) and not _GENERIC_AGENT.match(value or "")


def handle_refresh(state: SandboxState, clients: Clients, dialect: Dialect, request: TokenRequest) -> Outcome:
    """Answer one token request as ``dialect`` would. Synchronous: check and spend are atomic."""
    form, headers = request.form, request.headers
    if dialect.user_agent_rejected and not descriptive_user_agent(headers.get("user-agent")):
        return Outcome(dialect.user_agent_rejected, "user_agent_rejected")
    grant_type = form.get("grant_type")
    if not grant_type:
        missing = dialect.missing_grant_type or dialect.malformed.fill(param="grant_type")
        return Outcome(missing, "unsupported_grant_type")
    if grant_type != "refresh_token":
        return Outcome(
            dialect.unsupported_grant.fill(grant_type=grant_type),
            "unsupported_grant_type",
        )
    client = presented_client(dialect, headers, form)
    if client is None:
        return Outcome(dialect.missing_client, "invalid_client")
    method, pair = client
    if not clients.valid(request.route, pair):
        return Outcome(dialect.wrong_client, "invalid_client", auth_method=method)
    token = request.refresh_token
    if token is None:
        return Outcome(
            dialect.malformed.fill(param="refresh_token"),
            "invalid_request",
            auth_method=method,
        )
    if dialect.missing_scope and not form.get("scope"):
        return Outcome(dialect.missing_scope, "missing_scope", auth_method=method)
    result = state.refresh(dialect.name, token)
    if result.verdict is not Verdict.OK:
        dead = {
            Verdict.REVOKED: dialect.revoked_grant,
            Verdict.EXPIRED: dialect.expired_grant,
        }.get(result.verdict, dialect.bad_grant)
        return Outcome(dead, result.verdict.value, result.grant, method)
    if result.grant is None:
        raise RuntimeError("a successful refresh without its grant")
    return Outcome(
        Answer(200, success_body(dialect, result.grant, result, now=time.time())),
        "success",
        result.grant,
        method,
        result.rotated,
    )


def success_body(dialect: Dialect, grant: Grant, result: RefreshResult, now: float) -> dict[str, Any]:
    body: dict[str, Any] = dict(dialect.envelope)
    body["access_token"] = result.access_token
    body["token_type"] = dialect.token_type
    body["expires_in"] = result.expires_in
    for name in dialect.mirror_expires_in:
        body[name] = result.expires_in
    if result.refresh_token is not None:
        body["refresh_token"] = result.refresh_token
    if dialect.refresh_token_expires_in is not None:
        spent = int(now - grant.created_at) if dialect.refresh_lifetime_from_grant else 0
        body["refresh_token_expires_in"] = max(0, dialect.refresh_token_expires_in - spent)
    body["scope"] = grant.scope.split() if dialect.scope_as_list else grant.scope
    return body


def finish(dialect: Dialect, headers: Mapping[str, str], answer: Answer) -> Answer:
    """Headers every token response carries, and GitHub's form-encoded default."""
    answer = answer.with_headers(**NO_STORE)
    wants_json = "application/json" in headers.get("accept", "").lower()
    if dialect.form_encoded_unless_accept_json and not wants_json and isinstance(answer.body, Mapping):
        text = urlencode({k: _form_value(v) for k, v in answer.body.items()})
        return Answer(
            answer.status,
            text,
            answer.headers,
            "application/x-www-form-urlencoded; charset=utf-8",
        )
    return answer


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


# -- faults -------------------------------------------------------------------------------


def rate_limit_answer(dialect: Dialect, fault: Fault, now: float) -> Answer:
    style = fault.rate_limit_style or dialect.default_rate_limit_style
    wait = fault.retry_after
    whole = math.ceil(wait)
    reset_at = math.ceil(now + wait)
    headers: dict[str, str] = {}
    body: Any = dialect.rate_limited_body
    if style is RateLimitStyle.RETRY_AFTER_SECONDS:
        headers["Retry-After"] = str(whole)
    elif style is RateLimitStyle.RETRY_AFTER_DATE:
        headers["Retry-After"] = email.utils.formatdate(reset_at, usegmt=True)
    elif style is RateLimitStyle.DISCORD_BODY:
        body = {
            "message": "You are being rate limited.",
            "retry_after": round(wait, 3),
            "global": fault.platform_wide,
        }
        headers["Retry-After"] = str(whole)
    elif style is RateLimitStyle.X_RESET:
        headers.update(
            {
                "x-rate-limit-limit": "50",
                "x-rate-limit-remaining": "0",
                "x-rate-limit-reset": str(reset_at),
            }
        )
    if fault.platform_wide and style is not RateLimitStyle.DISCORD_BODY:
        headers["X-RateLimit-Scope"] = "global"
    if style is not RateLimitStyle.NONE:
        for name, template in dialect.rate_limit_headers.items():
            headers.setdefault(name, template.format(reset_after=f"{wait:g}", reset_at=reset_at))
    return Answer(fault.status or 429, body, headers)


def fault_answer(dialect: Dialect, fault: Fault, presented_token: str | None, now: float) -> Answer:
    """The answer for a fault that does not touch the grant (everything but lost_response,
    and timeout without a status, which end in a normal refresh)."""
    mode = fault.mode
    if mode is FaultMode.RATE_LIMIT:
        return rate_limit_answer(dialect, fault, now)
    if mode is FaultMode.FORBIDDEN_HTML:
        return Answer(fault.status or 403, _GOOGLE_403_PAGE, {}, "text/html; charset=UTF-8")
    if mode is FaultMode.INVALID_CLIENT:
        return dialect.wrong_client
    if mode is FaultMode.ECHO_TOKEN:
        token = presented_token or ""
        return rfc(
            fault.status or 400,
            "invalid_grant",
            f"Refresh token '{token}' is not valid for this client",
            refresh_token=token,
        )
    return rfc(
        fault.status or 500,
        "server_error",
        "The authorization server encountered an unexpected condition (sandbox fault).",
    )
