"""The HTTP API's application: one FastAPI app for the worker (`HTTP_PORT`) and for
`token-refresh api` alone (then without a probe: no consumer, no circuits of its own)."""

from __future__ import annotations

from importlib.metadata import version

from fastapi import FastAPI

from stream_app.http import admin, bulk_routes, dashboard, health, metrics_route
from stream_app.http.auth import BearerTokens
from stream_app.http.health import ReadinessChecks
from stream_app.http.operational import OperationalFigures
from stream_app.http.probe import WorkerProbe
from stream_app.service import TokenService

DESCRIPTION = """Health, metrics and administration of the token refresh service.

Admin endpoints take `Authorization: Bearer <one of ADMIN_TOKENS>`; the token endpoint, present
only when TOKEN_ENDPOINT_TOKENS is set, takes one of those. No token: 401; a token of the other
scope: 403."""


def create_app(service: TokenService, probe: WorkerProbe | None = None) -> FastAPI:
    bearer_tokens = BearerTokens(service.settings)
    app = bare_app(token_endpoint=bearer_tokens.enabled("token"))
    app.state.service = service
    app.state.database = service.database
    app.state.probe = probe
    app.state.bearer_tokens = bearer_tokens
    app.state.operational = OperationalFigures(service.settings, service.database, probe)
    app.state.readiness = ReadinessChecks(service.database, probe)
    return app


def bare_app(*, token_endpoint: bool) -> FastAPI:
    """The routes without their state (the OpenAPI document is made from this)."""
    app = FastAPI(title="token-refresh", version=version("token-refresh"), description=DESCRIPTION)
    app.include_router(health.router)
    app.include_router(metrics_route.router)
    app.include_router(admin.admin)
    for router in (bulk_routes.router, dashboard.page, dashboard.data):
        app.include_router(router)
    if token_endpoint:
        app.include_router(admin.tokens)
    return app
