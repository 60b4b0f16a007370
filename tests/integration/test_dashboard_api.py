"""The bulk refresh routes and the dashboard's endpoints over HTTP (httpx on the ASGI app, real
Postgres): admin token required, jobs created, read, listed and cancelled through the job
store, the page and its static files served without data under a strict CSP."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from stream_app.http import create_app
from stream_app.service import TokenService
from tests.integration.conftest import ServiceFactory

pytestmark = pytest.mark.postgres

ADMIN = secrets.token_urlsafe(32)
READER = secrets.token_urlsafe(32)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def service(make_service: ServiceFactory, own_database_url: str) -> TokenService:
    return make_service(database_url=own_database_url, admin_tokens=ADMIN, token_endpoint_tokens=READER)


@pytest.fixture
async def api(service: TokenService) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


async def test_bulk_routes_want_an_admin_token(api: httpx.AsyncClient) -> None:
    job = str(uuid.uuid4())
    for method, url in (
        ("POST", "/refresh/bulk"),
        ("GET", "/refresh/bulk"),
        ("GET", f"/refresh/bulk/{job}"),
        ("POST", f"/refresh/bulk/{job}/cancel"),
        ("GET", "/dashboard/data"),
    ):
        assert (await api.request(method, url, json={})).status_code == 401, url
        assert (await api.request(method, url, json={}, headers=bearer(READER))).status_code == 403, url


async def test_a_job_is_created_followed_listed_and_cancelled(api: httpx.AsyncClient) -> None:
    body = {"selector": {"platform": "spotify", "statuses": ["error"]}, "dry_run": True, "rate_per_platform": 2.5}
    created = await api.post("/refresh/bulk", json=body, headers=bearer(ADMIN))
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    assert created.json()["status_url"] == f"/refresh/bulk/{job_id}"

    job = (await api.get(f"/refresh/bulk/{job_id}", headers=bearer(ADMIN))).json()
    assert job["status"] == "pending" and job["dry_run"] is True and job["rate_per_platform"] == 2.5
    assert job["selector"]["platform"] == "spotify" and job["selector"]["statuses"] == ["error"]
    assert job["created_by"] == "api"

    other = (await api.post("/refresh/bulk", json={}, headers=bearer(ADMIN))).json()["id"]
    listed = (await api.get("/refresh/bulk", headers=bearer(ADMIN))).json()
    assert [j["id"] for j in listed] == [other, job_id]  # newest first

    cancelled = await api.post(f"/refresh/bulk/{job_id}/cancel", headers=bearer(ADMIN))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert (await api.get(f"/refresh/bulk/{job_id}", headers=bearer(ADMIN))).json()["status"] == "cancelled"

    missing = uuid.uuid4()
    assert (await api.get(f"/refresh/bulk/{missing}", headers=bearer(ADMIN))).status_code == 404
    assert (await api.post(f"/refresh/bulk/{missing}/cancel", headers=bearer(ADMIN))).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"selector": {"platform": "myspace"}},
        {"selector": {"statuses": ["needs_reauth"]}},
        {"selector": {"statuses": []}},
        {"rate_per_platform": 0},
        {"rate_per_platform": 5000},
        {"selector": {}, "surprise": True},
    ],
    ids=["unknown-platform", "unselectable-status", "no-status", "zero-rate", "rate-too-high", "unknown-field"],
)
async def test_a_bad_request_is_refused_and_creates_no_job(api: httpx.AsyncClient, body: dict[str, object]) -> None:
    assert (await api.post("/refresh/bulk", json=body, headers=bearer(ADMIN))).status_code == 422
    assert (await api.get("/refresh/bulk", headers=bearer(ADMIN))).json() == []


async def test_the_page_holds_no_data_and_runs_under_a_strict_policy(api: httpx.AsyncClient) -> None:
    page = await api.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "<script>" not in page.text and " on" + "click=" not in page.text  # no inline script or handler
    for name in ("dashboard.js", "dashboard.css", "chart.umd.min.js"):
        static = await api.get(f"/dashboard/static/{name}")
        assert static.status_code == 200 and static.content, name
    assert "Chart.js v4" in (await api.get("/dashboard/static/chart.umd.min.js")).text[:200]
    for name in ("dashboard.html", "../app.py", "vendor/chart.js/LICENSE.md", "%2e%2e%2fapp.py"):
        assert (await api.get(f"/dashboard/static/{name}")).status_code == 404, name


async def test_the_data_endpoint_answers_on_an_empty_database_without_a_worker(api: httpx.AsyncClient) -> None:
    data = (await api.get("/dashboard/data", headers=bearer(ADMIN))).json()
    assert data["connections"] == [] and data["circuits"] is None
    assert data["expiring"]["counts"] == [0] * 12
    assert len(data["activity"]["hours"]) == 24
    assert set(data["activity"]["counts"]) == {"refreshed", "failed", "needs_reauth", "deferred"}
    assert data["needs_reauth"] == {"total": 0, "connections": []}
    assert data["dead_letters"]["command"] == "token-refresh dlq show <topic>"
