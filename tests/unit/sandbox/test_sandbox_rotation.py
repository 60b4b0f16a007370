"""Rotation, single use, token-family revocation, and concurrency of refreshes."""

from __future__ import annotations

import asyncio

import httpx
import pytest

SPENT_ANSWER = {
    "discord": (400, {"error": "invalid_grant"}),
    "x": (
        400,
        {
            "error": "invalid_request",
            "error_description": "Value passed for the token was invalid.",
        },
    ),
    "github_app": (200, {"error": "bad_refresh_token"}),
    "slack": (200, {"ok": False, "error": "invalid_refresh_token"}),
}


@pytest.mark.parametrize("platform", sorted(SPENT_ANSWER))
def test_single_use_rotation(platform, grant, refresh, truth):
    g = grant(platform)
    first = refresh(platform, g["refresh_token"])
    assert first.status_code == 200
    rotated = first.json()["refresh_token"]
    assert rotated != g["refresh_token"]

    reuse = refresh(platform, g["refresh_token"])
    status, expected = SPENT_ANSWER[platform]
    assert reuse.status_code == status
    body = reuse.json()
    assert {k: body[k] for k in expected} == expected
    assert "access_token" not in body

    state = truth(g["grant_id"])
    assert state["spent_refresh_tokens"] == [g["refresh_token"]]
    assert state["live_refresh_token"] == rotated
    assert state["refresh_count"] == 1


@pytest.mark.parametrize("platform", ["discord", "github_app", "slack"])
def test_reuse_does_not_kill_the_family_outside_x(platform, grant, refresh, truth):
    g = grant(platform)
    rotated = refresh(platform, g["refresh_token"]).json()["refresh_token"]
    refresh(platform, g["refresh_token"])  # reuse: refused
    assert truth(g["grant_id"])["revoked"] is False
    assert refresh(platform, rotated).status_code == 200


def test_x_reuse_revokes_the_whole_token_family(grant, refresh, truth):
    g = grant("x")
    rotated = refresh("x", g["refresh_token"]).json()["refresh_token"]
    assert refresh("x", g["refresh_token"]).status_code == 400  # reuse

    state = truth(g["grant_id"])
    assert state["revoked"] is True
    assert state["revoked_reason"] == "reuse_detected"
    live = refresh("x", rotated)
    assert live.status_code == 400
    assert live.json() == {
        "error": "invalid_request",
        "error_description": "Value passed for the token was invalid.",
    }


def test_microsoft_rotates_but_the_old_token_stays_valid(grant, refresh, truth):
    g = grant("microsoft")
    first = refresh("microsoft", g["refresh_token"]).json()["refresh_token"]
    second = refresh("microsoft", g["refresh_token"])
    assert second.status_code == 200
    assert second.json()["refresh_token"] not in (first, g["refresh_token"])
    assert refresh("microsoft", first).status_code == 200
    state = truth(g["grant_id"])
    assert state["spent_refresh_tokens"] == []
    assert g["refresh_token"] in state["valid_refresh_tokens"]
    assert state["refresh_count"] == 3


def test_twitch_changes_the_refresh_token(grant, refresh, truth):
    g = grant("twitch")
    new = refresh("twitch", g["refresh_token"]).json()["refresh_token"]
    assert new != g["refresh_token"]
    assert truth(g["grant_id"])["live_refresh_token"] == new
    assert refresh("twitch", new).status_code == 200


@pytest.mark.parametrize("platform", ["spotify", "youtube", "linkedin", "reddit"])
def test_non_rotating_tokens_can_be_used_again(platform, grant, refresh, truth):
    g = grant(platform)
    for _ in range(3):
        response = refresh(platform, g["refresh_token"])
        assert response.status_code == 200
        assert response.json().get("refresh_token", g["refresh_token"]) == g["refresh_token"]
    state = truth(g["grant_id"])
    assert state["refresh_count"] == 3
    assert state["spent_refresh_tokens"] == []
    assert state["live_refresh_token"] == g["refresh_token"]
    assert len(state["access_tokens"]) == 4


def test_rotation_can_be_overridden_per_grant(grant, refresh, truth):
    g = grant("spotify", rotation="single_use")
    assert g["rotation"] == "single_use"
    new = refresh("spotify", g["refresh_token"]).json()["refresh_token"]
    assert refresh("spotify", g["refresh_token"]).json() == {
        "error": "invalid_grant",
        "error_description": "Invalid refresh token",
    }
    assert truth(g["grant_id"])["live_refresh_token"] == new


REVOKED_ANSWER = {
    "spotify": (
        400,
        {"error": "invalid_grant", "error_description": "Refresh token revoked"},
    ),
    "youtube": (
        400,
        {
            "error": "invalid_grant",
            "error_description": "Token has been expired or revoked.",
        },
    ),
    "discord": (400, {"error": "invalid_grant"}),
    "twitch": (400, {"status": 400, "message": "Invalid refresh token"}),
    "slack": (200, {"ok": False, "error": "invalid_refresh_token"}),
    "reddit": (400, {"error": "invalid_request"}),
}


@pytest.mark.parametrize("platform", sorted(REVOKED_ANSWER))
def test_revoked_grant_gets_the_providers_invalid_grant(platform, grant, refresh, sandbox, http, truth):
    g = grant(platform)
    revoked = http.post(sandbox.admin_url(f"grants/{g['grant_id']}/revoke"))
    assert revoked.status_code == 200
    assert revoked.json()["revoked"] is True
    response = refresh(platform, g["refresh_token"])
    status, body = REVOKED_ANSWER[platform]
    assert response.status_code == status
    assert response.json() == body
    assert truth(g["grant_id"])["refresh_count"] == 0


def test_revoked_as_expired_uses_the_expired_wording(grant, refresh, sandbox, http):
    g = grant("spotify")
    http.post(sandbox.admin_url(f"grants/{g['grant_id']}/revoke"), json={"reason": "expired"})
    assert refresh("spotify", g["refresh_token"]).json() == {
        "error": "invalid_grant",
        "error_description": "Refresh token expired",
    }

    m = grant("microsoft")
    http.post(sandbox.admin_url(f"grants/{m['grant_id']}/revoke"))
    body = refresh("microsoft", m["refresh_token"]).json()
    assert body["error"] == "invalid_grant"
    assert body["error_codes"] == [50173]


async def test_concurrent_refreshes_of_a_single_use_token_spend_it_once(sandbox, grant, truth):
    g = grant("discord")
    sandbox.state.latency = 0.05  # keep all requests in flight together
    client_id, secret = sandbox.credentials("discord")
    form = {
        "grant_type": "refresh_token",
        "refresh_token": g["refresh_token"],
        "client_id": client_id,
        "client_secret": secret,
    }
    async with httpx.AsyncClient(timeout=10) as client:
        responses = await asyncio.gather(*(client.post(sandbox.token_url("discord"), data=form) for _ in range(10)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [400] * 9
    state = truth(g["grant_id"])
    assert state["refresh_count"] == 1
    assert state["max_concurrent_requests"] == 10
    assert state["in_flight"] == 0


async def test_sequential_requests_are_never_concurrent(sandbox, grant, truth):
    g = grant("spotify")
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(3):
            response = await client.post(
                sandbox.token_url("spotify"),
                auth=sandbox.credentials("spotify"),
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": g["refresh_token"],
                },
            )
            assert response.status_code == 200
    assert truth(g["grant_id"])["max_concurrent_requests"] == 1
