"""aiohttp routes of the provider sandbox: the token endpoints and the ``/_admin`` API.

Token endpoints: ``POST /{platform}/token`` for every platform key, and ``POST /google/token``
for the endpoint the three Google platforms share. Logs name the platform, the grant id and
the outcome, never a token or a secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from .dialects import NEVER_REFRESHED, PLATFORMS, ROUTES, Answer, Dialect, dialect_for
from .echo import echo_answer, hostile_number_answer
from .exchange import (
    Clients,
    Outcome,
    TokenRequest,
    effective_platform,
    fault_answer,
    finish,
    handle_refresh,
)
from .revocation import REVOCATION_ROUTES, handle_revocation
from .state import Fault, FaultMode, SandboxError, SandboxState

log = logging.getLogger("stream_app.sandbox")

STATE_KEY = web.AppKey("sandbox_state", SandboxState)
CLIENTS_KEY = web.AppKey("sandbox_clients", Clients)


def render(answer: Answer) -> web.Response:
    headers = dict(answer.headers)
    if isinstance(answer.body, Mapping):
        data = json.dumps(answer.body).encode()
    elif isinstance(answer.body, str):
        data = answer.body.encode()
    else:
        data = b""
    if data:
        headers["Content-Type"] = answer.content_type
    return web.Response(status=answer.status, body=data, headers=headers)


def _json(status: int, body: Any) -> web.Response:
    return render(Answer(status, body))


# -- token endpoints ----------------------------------------------------------------------


async def _read_form(request: web.Request, dialect: Dialect) -> dict[str, str]:
    raw = await request.read()
    ctype = request.content_type
    if ctype == "application/x-www-form-urlencoded":
        return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    if ctype == "application/json" and dialect.accepts_json_body:
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            return {}
        if isinstance(data, dict):
            return {str(k): str(v) for k, v in data.items() if v is not None}
    return {}  # e.g. a JSON body where the provider wants a form: reads as an empty form


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _faulted(request: web.Request, fault: Fault, dialect: Dialect, treq: TokenRequest) -> tuple[Outcome, bool]:
    """Answer a faulted request. Returns (outcome, drop_connection)."""
    state, clients = request.app[STATE_KEY], request.app[CLIENTS_KEY]
    label = f"fault:{fault.mode.value}"
    if fault.mode is FaultMode.TIMEOUT:
        await asyncio.sleep(fault.delay)
        if fault.status is not None:
            return Outcome(fault_answer(dialect, fault, None, time.time()), label), False
        if _client_gone(request):  # the client gave up: nothing processed, nothing spent
            return Outcome(Answer(499), "client_gone"), True
        return handle_refresh(state, clients, dialect, treq), False
    if fault.mode is FaultMode.LOST_RESPONSE:
        # Processed (and spent) now; the answer never reaches the client.
        outcome = handle_refresh(state, clients, dialect, treq)
        await asyncio.sleep(fault.delay)
        return Outcome(
            outcome.answer,
            f"{label}:{outcome.outcome}",
            outcome.grant,
            outcome.auth_method,
            outcome.rotated,
        ), True
    if fault.mode is FaultMode.ECHO_SECRETS:
        return Outcome(echo_answer(dialect, fault, treq), label), False
    if fault.mode is FaultMode.HOSTILE_NUMBER and fault.shape == "expires_in":
        outcome = handle_refresh(state, clients, dialect, treq)  # processed and spent, as normal
        return Outcome(
            hostile_number_answer(dialect, fault, outcome.answer),
            f"{label}:{outcome.outcome}",
            outcome.grant,
            outcome.auth_method,
            outcome.rotated,
        ), False
    if fault.mode is FaultMode.HOSTILE_NUMBER:
        return Outcome(hostile_number_answer(dialect, fault, Answer(429)), label), False
    answer = fault_answer(dialect, fault, treq.refresh_token, time.time())
    return Outcome(answer, label), False


async def token_endpoint(request: web.Request) -> web.StreamResponse:
    route = request.match_info["platform"]
    if route not in ROUTES:
        why = "never refreshes" if route in NEVER_REFRESHED else "is not a sandbox platform"
        return _json(404, {"error": "not_found", "error_description": f"{route!r} {why}"})
    state = request.app[STATE_KEY]
    dialect = dialect_for(route)
    form = await _read_form(request, dialect)
    headers = {k.lower(): v for k, v in request.headers.items()}
    treq = TokenRequest(route, headers, form)
    grant = state.grant_for_refresh_token(treq.refresh_token)
    if grant is not None and grant.dialect != dialect.name:
        grant = None
    platform = effective_platform(route, dialect, grant)
    drop = False
    with state.in_flight(grant):
        if state.latency > 0:
            await asyncio.sleep(state.latency)
        fault = state.take_fault(platform)
        if fault is None:
            outcome = handle_refresh(state, request.app[CLIENTS_KEY], dialect, treq)
        else:
            outcome, drop = await _faulted(request, fault, dialect, treq)
    answer = finish(dialect, headers, outcome.answer)
    known = outcome.grant or grant
    grant_id = known.grant_id if known is not None else None
    state.record(
        platform,
        outcome.outcome,
        route=route,
        grant_id=grant_id,
        status=answer.status,
        auth_method=outcome.auth_method,
        rotated=outcome.rotated,
        fault=fault.mode.value if fault else None,
    )
    log.debug(
        "token request platform=%s grant=%s outcome=%s status=%s",
        platform,
        grant_id,
        outcome.outcome,
        answer.status,
    )
    if drop and request.transport is not None:
        request.transport.abort()
    return render(answer)


async def revocation_endpoint(request: web.Request) -> web.StreamResponse:
    """RFC 7009 (``stream_app.sandbox.revocation``); 404 for a platform without such an endpoint."""
    route = request.match_info["platform"]
    if route not in REVOCATION_ROUTES:
        return _json(404, {"error": "not_found", "error_description": f"{route!r} has no revocation endpoint"})
    state = request.app[STATE_KEY]
    raw = await request.read()
    form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    if request.content_type != "application/x-www-form-urlencoded":
        form = {}
    headers = {k.lower(): v for k, v in request.headers.items()}
    done = await handle_revocation(state, request.app[CLIENTS_KEY], route, headers, form)
    state.record_revocation(
        done.platform,
        done.outcome,
        route=route,
        grant_id=done.grant_id,
        token_type_hint=form.get("token_type_hint"),
        live_token=done.live_token,
        status=done.answer.status,
    )
    log.debug("revocation request platform=%s grant=%s outcome=%s", done.platform, done.grant_id, done.outcome)
    if done.drop and request.transport is not None:
        request.transport.abort()
    return render(done.answer.with_headers(**{"Cache-Control": "no-store"}))


# -- admin API ----------------------------------------------------------------------------


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise SandboxError("the body must be a JSON object")
    return data


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def admin_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SandboxError as exc:
        return _json(400, {"error": "bad_request", "error_description": str(exc)})
    except json.JSONDecodeError:
        return _json(400, {"error": "bad_request", "error_description": "invalid JSON"})


async def create_grant(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    body = await _body(request)
    grant = state.create_grant(
        body.get("platform", ""),
        body.get("expires_in"),
        body.get("scope"),
        body.get("rotation"),
    )
    log.info("grant created platform=%s grant=%s", grant.platform, grant.grant_id)
    return _json(
        201,
        {
            "grant_id": grant.grant_id,
            "platform": grant.platform,
            "access_token": grant.live_access_token,
            "refresh_token": grant.live_refresh_token,
            "expires_in": grant.expires_in,
            "scope": grant.scope,
            "rotation": grant.rotation.value,
        },
    )


async def list_grants(request: web.Request) -> web.Response:
    return _json(200, {"grants": [g.snapshot() for g in request.app[STATE_KEY].grants()]})


async def get_grant(request: web.Request) -> web.Response:
    grant = request.app[STATE_KEY].grant(request.match_info["grant_id"])
    if grant is None:
        return _json(404, {"error": "not_found", "error_description": "no such grant"})
    return _json(200, grant.snapshot())


async def revoke_grant(request: web.Request) -> web.Response:
    body = await _body(request)
    reason = body.get("reason", "revoked")
    if reason not in ("revoked", "expired"):
        raise SandboxError("reason must be 'revoked' or 'expired'")
    grant = request.app[STATE_KEY].revoke(request.match_info["grant_id"], reason)
    if grant is None:
        return _json(404, {"error": "not_found", "error_description": "no such grant"})
    log.info(
        "grant revoked platform=%s grant=%s reason=%s",
        grant.platform,
        grant.grant_id,
        grant.revoked_reason,
    )
    return _json(200, grant.snapshot())


async def add_fault(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    fault = state.add_fault(await _body(request))
    log.info(
        "fault queued platform=%s mode=%s count=%s",
        fault.platform,
        fault.mode.value,
        fault.count,
    )
    return _json(201, {"queued": fault.describe(), "pending": state.pending_faults()})


async def list_faults(request: web.Request) -> web.Response:
    return _json(200, {"pending": request.app[STATE_KEY].pending_faults()})


async def clear_faults(request: web.Request) -> web.Response:
    request.app[STATE_KEY].clear_faults()
    return _json(200, {"pending": []})


async def add_fault_rule(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    rule = state.add_fault_rule(await _body(request))
    log.info(
        "fault rule added platform=%s mode=%s probability=%s",
        rule["platform"],
        rule["mode"],
        rule["probability"],
    )
    return _json(201, rule)


async def list_fault_rules(request: web.Request) -> web.Response:
    return _json(200, {"rules": request.app[STATE_KEY].fault_rules()})


async def end_fault_rules(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    state.end_fault_rules()
    return _json(200, {"rules": state.fault_rules()})


async def set_latency(request: web.Request) -> web.Response:
    body = await _body(request)
    try:
        seconds = float(body.get("seconds", 0))
    except (TypeError, ValueError):
        raise SandboxError("seconds must be a number") from None
    if seconds < 0:
        raise SandboxError("seconds must be >= 0")
    request.app[STATE_KEY].latency = seconds
    return _json(200, {"seconds": seconds})


async def issued(request: web.Request) -> web.Response:
    return _json(200, request.app[STATE_KEY].issued())


async def revocations(request: web.Request) -> web.Response:
    return _json(200, {"revocations": request.app[STATE_KEY].revocations()})


async def stats(request: web.Request) -> web.Response:
    return _json(200, request.app[STATE_KEY].stats())


async def requests_log(request: web.Request) -> web.Response:
    return _json(200, {"requests": request.app[STATE_KEY].history()})


async def reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    log.info("sandbox state reset")
    return _json(200, {"reset": True})


async def health(request: web.Request) -> web.Response:
    clients = request.app[CLIENTS_KEY]
    return _json(
        200,
        {
            "ok": True,
            "platforms": {
                key: {
                    "token_path": f"/{key}/token",
                    "dialect": p.dialect,
                    "client_id": clients.for_platform(key)[0],
                    # A test double's secret, hashed all the same: a worker's start-up check
                    # compares it with its own (a real secret beside the sandbox's client id).
                    "client_secret_sha256": hashlib.sha256(clients.for_platform(key)[1].encode()).hexdigest(),
                }
                for key, p in PLATFORMS.items()
            },
        },
    )


def create_app(
    state: SandboxState | None = None,
    credentials: Mapping[str, tuple[str, str]] | None = None,
) -> web.Application:
    """The sandbox as an aiohttp application. ``credentials``: platform (or ``google``) ->
    (client_id, client_secret); unset ones default to ``sandbox-<key>-id``/``-secret``."""
    app = web.Application(middlewares=[admin_errors])
    app[STATE_KEY] = state if state is not None else SandboxState()
    app[CLIENTS_KEY] = Clients(credentials)
    app.router.add_get("/_admin/health", health)
    app.router.add_post("/_admin/grants", create_grant)
    app.router.add_get("/_admin/grants", list_grants)
    app.router.add_get("/_admin/grants/{grant_id}", get_grant)
    app.router.add_post("/_admin/grants/{grant_id}/revoke", revoke_grant)
    app.router.add_post("/_admin/faults", add_fault)
    app.router.add_get("/_admin/faults", list_faults)
    app.router.add_delete("/_admin/faults", clear_faults)
    app.router.add_post("/_admin/fault-rules", add_fault_rule)
    app.router.add_get("/_admin/fault-rules", list_fault_rules)
    app.router.add_delete("/_admin/fault-rules", end_fault_rules)
    app.router.add_post("/_admin/latency", set_latency)
    app.router.add_get("/_admin/issued", issued)
    app.router.add_get("/_admin/stats", stats)
    app.router.add_get("/_admin/revocations", revocations)
    app.router.add_get("/_admin/requests", requests_log)
    app.router.add_post("/_admin/reset", reset)
    app.router.add_post("/{platform}/token", token_endpoint)
    app.router.add_post("/{platform}/revoke", revocation_endpoint)
    return app


async def serve(
    host: str = "127.0.0.1",
    port: int = 8099,
    state: SandboxState | None = None,
    credentials: Mapping[str, tuple[str, str]] | None = None,
    *,
    access_log: bool = True,
    shutdown_timeout: float = 5.0,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Run the sandbox until cancelled. ``ready`` gets the base URL once it listens."""
    app = create_app(state, credentials)
    runner = web.AppRunner(
        app,
        access_log=logging.getLogger("stream_app.sandbox.access") if access_log else None,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        base_url = f"http://{host}:{bound_port}"
        log.info("provider sandbox listening on %s", base_url)
        if ready is not None:
            ready(base_url)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
