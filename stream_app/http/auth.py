"""Bearer tokens of the HTTP API: ADMIN_TOKENS for the admin endpoints and the dashboard,
TOKEN_ENDPOINT_TOKENS for the endpoint that hands out access tokens. A presented token is
compared with every configured one in constant time (no early exit: the time taken says
nothing about which token, or how much of one, matched); no token, or one that is nobody's,
is 401; a token of the other scope is 403. Tokens are never logged: the server keeps no access
log, and nothing here names a token in an error."""

from __future__ import annotations

import hmac
from typing import Literal

from fastapi import HTTPException, Request, status

from stream_app.settings import Settings

Scope = Literal["admin", "token"]
SCOPES: tuple[Scope, ...] = ("admin", "token")


class BearerTokens:
    def __init__(self, settings: Settings) -> None:
        self._tokens = {scope: [token.encode() for token in settings.bearer_tokens(scope)] for scope in SCOPES}

    def scopes_of(self, presented: str) -> set[Scope]:
        candidate = presented.encode()
        found: set[Scope] = set()
        for scope, tokens in self._tokens.items():
            for token in tokens:
                if hmac.compare_digest(candidate, token):
                    found.add(scope)
        return found

    def enabled(self, scope: Scope) -> bool:
        return bool(self._tokens[scope])


def presented_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def require(scope: Scope, request: Request) -> None:
    """The request's bearer token must be one of ``scope``'s (FastAPI dependency body)."""
    tokens: BearerTokens = request.app.state.bearer_tokens
    presented = presented_token(request)
    scopes = tokens.scopes_of(presented) if presented is not None else set()
    if not scopes:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a bearer token is required" if presented is None else "unknown bearer token",
            headers={"WWW-Authenticate": 'Bearer realm="token-refresh"'},
        )
    if scope not in scopes:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this token's scope does not include {scope!r}")


def require_admin(request: Request) -> None:
    require("admin", request)


def require_token_scope(request: Request) -> None:
    require("token", request)
