"""RFC 7009 revocation endpoints: ``POST /{platform}/revoke`` (``/google/revoke`` for the three
Google platforms), in each provider's dialect, for the providers that have one.

- Google (``https://oauth2.googleapis.com/revoke``): the token alone, no client authentication;
  200 ``{}``; a token it does not know: 400 ``invalid_token`` (not RFC 7009's 200).
- Discord (``/api/oauth2/token/revoke``): client by Basic or form; 200 ``{}`` whether or not the
  token was valid; wrong client 401 ``invalid_client``.
- X (``/2/oauth2/revoke``): confidential client by Basic; 200 ``{"revoked": true}`` whether or
  not the token was valid; wrong client 401 ``unauthorized_client``.

Revoking any token of a grant revokes the whole grant (its refresh tokens stop working at the
token endpoint). Other platforms answer 404: Spotify has no revocation endpoint, GitHub's grant
deletion is not RFC 7009. Faults queued with ``"endpoint": "revoke"`` answer these requests
(``stream_app.sandbox.state.REVOKE_FAULT_MODES``). Requests are recorded apart from the token
requests (``GET /_admin/revocations``), without token values.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

from .dialects import GOOGLE, PLATFORMS, Answer, dialect_for, rfc
from .exchange import Clients, fault_answer, presented_client
from .state import Fault, FaultMode, SandboxState


@dataclass(frozen=True)
class RevocationDialect:
    name: str  # the token dialect whose grants it revokes
    # Whether the client authenticates, by the methods its token endpoint accepts.
    authenticates: bool
    revoked: Answer
    unknown_token: Answer
    missing_token: Answer
    wrong_client: Answer


_GOOGLE = RevocationDialect(
    name=GOOGLE,
    authenticates=False,
    revoked=Answer(200, {}),
    unknown_token=rfc(400, "invalid_token", "Token expired or revoked"),
    missing_token=rfc(400, "invalid_request", "Bad Request"),
    wrong_client=rfc(401, "invalid_client"),
)
_DISCORD = RevocationDialect(
    name="discord",
    authenticates=True,
    revoked=Answer(200, {}),
    unknown_token=Answer(200, {}),
    missing_token=rfc(400, "invalid_request"),
    wrong_client=rfc(401, "invalid_client"),
)
_X = RevocationDialect(
    name="x",
    authenticates=True,
    revoked=Answer(200, {"revoked": True}),
    unknown_token=Answer(200, {"revoked": True}),
    missing_token=rfc(400, "invalid_request", "Missing required parameter [token]."),
    wrong_client=rfc(401, "unauthorized_client", "Missing valid authorization header"),
)
_BY_DIALECT = {dialect.name: dialect for dialect in (_GOOGLE, _DISCORD, _X)}


def revocation_dialect(route: str) -> RevocationDialect | None:
    """The dialect of ``/{route}/revoke``, or None when that platform has no such endpoint."""
    if route == GOOGLE:
        return _GOOGLE
    spec = PLATFORMS.get(route)
    return _BY_DIALECT.get(spec.dialect) if spec is not None else None


REVOCATION_ROUTES: tuple[str, ...] = tuple(
    route for route in (*PLATFORMS, GOOGLE) if revocation_dialect(route) is not None
)


@dataclass(frozen=True)
class RevocationOutcome:
    answer: Answer
    outcome: str  # revoked, unknown_token, invalid_client, invalid_request, fault:<mode>...
    platform: str
    grant_id: str | None = None
    drop: bool = False  # processed, but the answer never reaches the client
    # Whether the token presented was still valid at the token endpoint (not spent, not revoked).
    live_token: bool | None = None


async def handle_revocation(
    state: SandboxState,
    clients: Clients,
    route: str,
    headers: Mapping[str, str],
    form: Mapping[str, str],
) -> RevocationOutcome:
    dialect = revocation_dialect(route)
    if dialect is None:
        raise KeyError(route)
    token = form.get("token") or None
    grant = state.grant_for_refresh_token(token)
    platform = grant.platform if grant is not None and grant.dialect == dialect.name else route
    if state.latency > 0:
        await asyncio.sleep(state.latency)
    fault = state.take_fault(platform, "revoke")
    if fault is not None:
        return await _faulted(state, clients, dialect, route, platform, headers, form, fault)
    return _revoke(state, clients, dialect, route, platform, headers, form)


def _revoke(
    state: SandboxState,
    clients: Clients,
    dialect: RevocationDialect,
    route: str,
    platform: str,
    headers: Mapping[str, str],
    form: Mapping[str, str],
) -> RevocationOutcome:
    if dialect.authenticates:
        presented = presented_client(dialect_for(route), headers, form)
        if presented is None or not clients.valid(route, presented[1]):
            return RevocationOutcome(dialect.wrong_client, "invalid_client", platform)
    token = form.get("token") or None
    if token is None:
        return RevocationOutcome(dialect.missing_token, "invalid_request", platform)
    known = state.grant_for_refresh_token(token)
    live = known is not None and not known.revoked and token in known.valid_refresh_tokens
    grant = state.revoke_token(dialect.name, token)
    if grant is None:
        return RevocationOutcome(dialect.unknown_token, "unknown_token", platform)
    return RevocationOutcome(dialect.revoked, "revoked", grant.platform, grant.grant_id, live_token=live)


async def _faulted(
    state: SandboxState,
    clients: Clients,
    dialect: RevocationDialect,
    route: str,
    platform: str,
    headers: Mapping[str, str],
    form: Mapping[str, str],
    fault: Fault,
) -> RevocationOutcome:
    label = f"fault:{fault.mode.value}"
    token = form.get("token") or ""
    if fault.mode is FaultMode.TIMEOUT:
        await asyncio.sleep(fault.delay)
        if fault.status is None:
            return _revoke(state, clients, dialect, route, platform, headers, form)
    elif fault.mode is FaultMode.LOST_RESPONSE:
        done = _revoke(state, clients, dialect, route, platform, headers, form)
        await asyncio.sleep(fault.delay)
        return RevocationOutcome(done.answer, f"{label}:{done.outcome}", done.platform, done.grant_id, drop=True)
    elif fault.mode is FaultMode.INVALID_CLIENT:
        return RevocationOutcome(dialect.wrong_client, label, platform)
    elif fault.mode is FaultMode.ECHO_TOKEN:
        # An error quoting what it was sent (not an RFC code meaning "already invalid").
        answer = rfc(fault.status or 400, "invalid_request", f"Token '{token}' could not be revoked", token=token)
        return RevocationOutcome(answer, label, platform)
    return RevocationOutcome(fault_answer(dialect_for(route), fault, token, time.time()), label, platform)
