"""The /_admin API, ground truth, the Python API, and what the sandbox logs."""

from __future__ import annotations

import asyncio
import logging
import socket

import httpx
import pytest

from stream_app.sandbox import SandboxServer, SandboxState, create_app, serve


def test_create_and_read_a_grant(sandbox, http):
    created = http.post(sandbox.admin_url("grants"), json={"platform": "spotify"})
    assert created.status_code == 201
    g = created.json()
    assert set(g) >= {
        "grant_id",
        "platform",
        "access_token",
        "refresh_token",
        "expires_in",
    }
    assert g["platform"] == "spotify" and g["expires_in"] == 3600

    read = http.get(sandbox.admin_url(f"grants/{g['grant_id']}"))
    assert read.status_code == 200
    state = read.json()
    assert state["grant_id"] == g["grant_id"]
    assert state["live_refresh_token"] == g["refresh_token"]
    assert state["live_access_token"] == g["access_token"]
    assert state["refresh_count"] == 0
    assert state["revoked"] is False
    assert state["spent_refresh_tokens"] == []

    listing = http.get(sandbox.admin_url("grants")).json()["grants"]
    assert [x["grant_id"] for x in listing] == [g["grant_id"]]


@pytest.mark.parametrize(
    "body,needle",
    [
        ({"platform": "github"}, "never refresh"),
        ({"platform": "myspace"}, "unknown platform"),
        ({}, "unknown platform"),
        ({"platform": "spotify", "expires_in": -5}, "expires_in"),
        ({"platform": "spotify", "rotation": "sometimes"}, "rotation"),
    ],
)
def test_bad_grant_requests(body, needle, sandbox, http):
    response = http.post(sandbox.admin_url("grants"), json=body)
    assert response.status_code == 400
    assert needle in response.json()["error_description"]


def test_invalid_json_is_a_400(sandbox, http):
    response = http.post(
        sandbox.admin_url("grants"),
        content=b"{nope",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400


def test_unknown_grant_is_a_404(sandbox, http):
    assert http.get(sandbox.admin_url("grants/grant_nope")).status_code == 404
    assert http.post(sandbox.admin_url("grants/grant_nope/revoke")).status_code == 404


def test_issued_lists_every_token_ever_issued(grant, refresh, sandbox, http):
    g = grant("discord")
    new = refresh("discord", g["refresh_token"]).json()
    issued = http.get(sandbox.admin_url("issued")).json()
    assert set(issued["access_tokens"]) == {g["access_token"], new["access_token"]}
    assert set(issued["refresh_tokens"]) == {g["refresh_token"], new["refresh_token"]}


def test_stats_count_per_platform_and_outcome(grant, refresh, fault, sandbox, http):
    g = grant("discord")
    assert refresh("discord", g["refresh_token"]).status_code == 200
    refresh("discord", g["refresh_token"])  # reuse
    refresh("spotify", "junk")
    fault("spotify", "rate_limit")
    refresh("spotify", "junk")
    refresh("spotify", "junk", credentials=("a", "b"))

    stats = http.get(sandbox.admin_url("stats")).json()
    assert stats["total"] == 5
    assert stats["by_platform"]["discord"] == {
        "total": 2,
        "outcomes": {"success": 1, "reused_refresh_token": 1},
    }
    assert stats["by_platform"]["spotify"]["outcomes"] == {
        "unknown_refresh_token": 1,
        "fault:rate_limit": 1,
        "invalid_client": 1,
    }
    assert stats["by_outcome"]["success"] == 1

    history = http.get(sandbox.admin_url("requests")).json()["requests"]
    assert [r["outcome"] for r in history][:2] == ["success", "reused_refresh_token"]
    assert history[0]["grant_id"] == g["grant_id"]
    assert history[0]["auth_method"] == "form"
    assert history[0]["rotated"] is True
    assert history[0]["status"] == 200


def test_reset_clears_everything(grant, refresh, fault, sandbox, http):
    g = grant("spotify")
    refresh("spotify", g["refresh_token"])
    fault("spotify", "server_error")
    http.post(sandbox.admin_url("latency"), json={"seconds": 0.01})

    assert http.post(sandbox.admin_url("reset")).json() == {"reset": True}

    assert http.get(sandbox.admin_url(f"grants/{g['grant_id']}")).status_code == 404
    assert http.get(sandbox.admin_url("issued")).json() == {
        "access_tokens": [],
        "refresh_tokens": [],
    }
    assert http.get(sandbox.admin_url("stats")).json()["total"] == 0
    assert http.get(sandbox.admin_url("faults")).json()["pending"] == []
    assert sandbox.state.latency == 0


def test_health_lists_platforms(sandbox, http):
    body = http.get(sandbox.admin_url("health")).json()
    assert body["ok"] is True
    assert body["platforms"]["gmail"]["client_id"] == "sandbox-google-id"
    assert "github" not in body["platforms"]


def test_token_requests_must_be_posts(sandbox, http):
    assert http.get(sandbox.token_url("spotify")).status_code == 405


# -- Python API ---------------------------------------------------------------------------


def test_custom_credentials_and_service_env():
    creds = {"spotify": ("my-id", "my-secret"), "youtube": ("g-id", "g-secret")}
    with SandboxServer(credentials=creds) as server:
        assert server.credentials("spotify") == ("my-id", "my-secret")
        assert server.credentials("gmail") == ("g-id", "g-secret")  # one Google client
        env = server.service_env()
        assert env["SPOTIFY_CLIENT_ID"] == "my-id"
        assert env["SPOTIFY_TOKEN_URL"] == f"{server.base_url}/spotify/token"
        assert env["GOOGLE_TOKEN_URL"] == f"{server.base_url}/google/token"
        assert env["GOOGLE_CLIENT_SECRET"] == "g-secret"
        assert env["GITHUB_APP_CLIENT_ID"] == "sandbox-github_app-id"
        assert "YOUTUBE_TOKEN_URL" not in env and "GITHUB_TOKEN_URL" not in env

        g = server.create_grant("gmail")
        response = httpx.post(
            server.token_url("gmail"),
            data={
                "grant_type": "refresh_token",
                "refresh_token": g["live_refresh_token"],
                "client_id": "g-id",
                "client_secret": "g-secret",
            },
        )
        assert response.status_code == 200
        default = httpx.post(
            server.token_url("gmail"),
            data={
                "grant_type": "refresh_token",
                "refresh_token": g["live_refresh_token"],
                "client_id": "sandbox-google-id",
                "client_secret": "sandbox-google-secret",
            },
        )
        assert default.status_code == 401
    with pytest.raises(RuntimeError):
        _ = server.base_url


def test_state_can_be_shared_and_inspected_directly():
    state = SandboxState()
    with SandboxServer(state=state) as server:
        g = state.create_grant("slack")
        response = httpx.post(
            server.token_url("slack"),
            auth=server.credentials("slack"),
            data={"grant_type": "refresh_token", "refresh_token": g.live_refresh_token},
        )
        assert response.json()["ok"] is True
        assert state.grant(g.grant_id).refresh_count == 1
        assert server.state is state
    server.stop()  # idempotent


async def test_async_context_manager():
    async with SandboxServer() as server:
        g = server.create_grant("x")
        async with httpx.AsyncClient() as client:
            response = await client.post(
                server.token_url("x"),
                auth=server.credentials("x"),
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": g["live_refresh_token"],
                },
            )
        assert response.status_code == 200


async def test_serve_runs_until_cancelled():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve("127.0.0.1", port, access_log=False, ready=ready.set_result))
    base_url = await asyncio.wait_for(ready, 5)
    assert base_url == f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{base_url}/_admin/health")).status_code == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{base_url}/_admin/health")


def test_create_app_returns_an_application():
    from aiohttp import web

    assert isinstance(create_app(), web.Application)


# -- logging ------------------------------------------------------------------------------


def test_tokens_never_appear_in_logs(caplog, grant, refresh, fault, sandbox, http):
    caplog.set_level(logging.DEBUG, logger="stream_app.sandbox")
    g = grant("discord")
    new = refresh("discord", g["refresh_token"]).json()
    refresh("discord", g["refresh_token"])
    fault("discord", "echo_token")
    refresh("discord", new["refresh_token"])
    http.post(sandbox.admin_url(f"grants/{g['grant_id']}/revoke"))
    refresh("discord", new["refresh_token"])

    messages = [r.getMessage() for r in caplog.records]
    assert any(g["grant_id"] in m for m in messages)  # something was logged
    issued = http.get(sandbox.admin_url("issued")).json()
    secrets = issued["access_tokens"] + issued["refresh_tokens"] + [sandbox.credentials("discord")[1]]
    for secret in secrets:
        assert not any(secret in m for m in messages)
