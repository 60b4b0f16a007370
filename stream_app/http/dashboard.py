"""The token-health dashboard: one page and its static files, which hold no data and need no
token, and GET /dashboard/data (ADMIN_TOKENS), which the page's script fetches with the admin
token the operator types in (kept in the tab's sessionStorage, never in a URL).

The page runs under a strict Content-Security-Policy: scripts and styles from this server only
(no inline script, no eval), requests to this server only. Chart.js is vendored under
static/vendor/ (no CDN is reachable from where the service runs)."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse, Response

from stream_app.http.auth import require_admin
from stream_app.http.dashboard_data import DashboardData, gather

page = APIRouter(tags=["dashboard"])
data = APIRouter(dependencies=[Depends(require_admin)], tags=["dashboard"])

STATIC = files("stream_app.http") / "static"
# Served by name only (no path from the request reaches the file system).
STATIC_FILES = {
    "dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "chart.umd.min.js": ("vendor/chart.js/chart.umd.min.js", "text/javascript; charset=utf-8"),
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@page.get(
    "/dashboard",
    response_class=HTMLResponse,
    summary="The token-health dashboard (the page asks for an admin token; its data come from /dashboard/data)",
)
async def dashboard() -> HTMLResponse:
    html = (STATIC / "dashboard.html").read_text(encoding="utf-8")
    return HTMLResponse(html, headers={**PAGE_HEADERS, "Cache-Control": "no-cache"})


@page.get("/dashboard/static/{name}", include_in_schema=False)
async def dashboard_static(name: str) -> Response:
    found = STATIC_FILES.get(name)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
    path, media_type = found
    return Response(
        (STATIC / path).read_bytes(),
        media_type=media_type,
        headers={**PAGE_HEADERS, "Cache-Control": "public, max-age=3600"},
    )


@data.get(
    "/dashboard/data",
    response_model=DashboardData,
    summary="The dashboard's figures: connections, expiries, 24 h of outcomes, re-auths, circuits, dead letters",
)
async def dashboard_data(request: Request, response: Response) -> Any:
    state = request.app.state
    response.headers["Cache-Control"] = "no-store"
    return await gather(state.database, state.service.hash_user_id, state.operational, state.probe)
