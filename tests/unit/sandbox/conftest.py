"""Fixtures for the provider sandbox tests: one running SandboxServer, reset per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from stream_app.sandbox import SandboxServer

# How each platform's client authenticates in these tests unless a test says otherwise.
PREFERRED_AUTH = {
    "spotify": "basic",
    "discord": "form",
    "youtube": "form",
    "gmail": "form",
    "google_calendar": "form",
    "github_app": "form",
    "x": "basic",
    "linkedin": "form",
    "reddit": "basic",
    "twitch": "form",
    "microsoft": "form",
    "slack": "basic",
}
ALL_PLATFORMS = tuple(PREFERRED_AUTH)
DESCRIPTIVE_UA = "web:sandbox-tests:v1.0 (by /u/token_refresh_bot)"


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(sandbox: SandboxServer) -> Iterator[None]:
    sandbox.state.reset()
    yield
    sandbox.state.reset()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


RefreshFn = Callable[..., httpx.Response]


@pytest.fixture
def refresh(sandbox: SandboxServer, http: httpx.Client) -> RefreshFn:
    """POST a refresh_token grant to ``platform``'s sandbox endpoint.

    auth: "basic" | "form" | "both" | "none" | None (the platform's preferred method);
    credentials: (id, secret) to present instead of the configured ones.
    """

    def call(
        platform: str,
        token: str | None,
        *,
        auth: str | None = None,
        credentials: tuple[str, str] | None = None,
        route: str | None = None,
        extra: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        client: httpx.Client | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        method = auth or PREFERRED_AUTH[platform]
        client_id, secret = credentials or sandbox.credentials(platform)
        data: dict[str, str] = {"grant_type": "refresh_token"}
        if token is not None:
            data["refresh_token"] = token
        if platform == "microsoft":
            data["scope"] = "offline_access User.Read"
        data.update(extra or {})
        sent_headers = {"User-Agent": DESCRIPTIVE_UA, "Accept": "application/json"}
        sent_headers.update(headers or {})
        kwargs: dict[str, Any] = {"data": data, "headers": sent_headers}
        if method in ("basic", "both"):
            kwargs["auth"] = (client_id, secret)
        if method in ("form", "both"):
            data["client_id"], data["client_secret"] = client_id, secret
        if timeout is not None:
            kwargs["timeout"] = timeout
        return (client or http).post(sandbox.token_url(route or platform), **kwargs)

    return call


@pytest.fixture
def grant(sandbox: SandboxServer, http: httpx.Client) -> Callable[..., dict[str, Any]]:
    """Create a grant through the admin API."""

    def create(platform: str, **options: Any) -> dict[str, Any]:
        response = http.post(sandbox.admin_url("grants"), json={"platform": platform, **options})
        assert response.status_code == 201, response.text
        return response.json()

    return create


@pytest.fixture
def fault(sandbox: SandboxServer, http: httpx.Client) -> Callable[..., dict[str, Any]]:
    def queue(platform: str, mode: str, **options: Any) -> dict[str, Any]:
        response = http.post(
            sandbox.admin_url("faults"),
            json={"platform": platform, "mode": mode, **options},
        )
        assert response.status_code == 201, response.text
        return response.json()

    return queue


@pytest.fixture
def truth(sandbox: SandboxServer, http: httpx.Client) -> Callable[[str], dict[str, Any]]:
    """The admin API's view of a grant."""

    def read(grant_id: str) -> dict[str, Any]:
        response = http.get(sandbox.admin_url(f"grants/{grant_id}"))
        assert response.status_code == 200, response.text
        return response.json()

    return read
