"""Each provider's dialect: success shape, client authentication, error answers."""

from __future__ import annotations

from urllib.parse import parse_qs

import httpx
import pytest

GOOGLE = ("youtube", "gmail", "google_calendar")
ALL = (
    "spotify",
    "discord",
    *GOOGLE,
    "github_app",
    "x",
    "linkedin",
    "reddit",
    "twitch",
    "microsoft",
    "slack",
)

# platform: (expires_in, token_type, refresh_token in the answer: absent | same | new)
SUCCESS = {
    "spotify": (3600, "Bearer", "absent"),
    "discord": (604800, "Bearer", "new"),
    "youtube": (3599, "Bearer", "absent"),
    "gmail": (3599, "Bearer", "absent"),
    "google_calendar": (3599, "Bearer", "absent"),
    "github_app": (28800, "bearer", "new"),
    "x": (7200, "bearer", "new"),
    "linkedin": (5184000, "Bearer", "same"),
    "reddit": (3600, "bearer", "same"),
    "twitch": (None, "bearer", "new"),  # ~14000, varies
    "microsoft": (3600, "Bearer", "new"),
    "slack": (43200, "bot", "new"),
}

BAD_TOKEN = {
    "spotify": (
        400,
        {"error": "invalid_grant", "error_description": "Invalid refresh token"},
    ),
    "discord": (400, {"error": "invalid_grant"}),
    **{
        g: (
            400,
            {
                "error": "invalid_grant",
                "error_description": "Token has been expired or revoked.",
            },
        )
        for g in GOOGLE
    },
    "x": (
        400,
        {
            "error": "invalid_request",
            "error_description": "Value passed for the token was invalid.",
        },
    ),
    "linkedin": (
        400,
        {
            "error": "invalid_request",
            "error_description": ("The provided authorization grant or refresh token is invalid, expired or revoked"),
        },
    ),
    "reddit": (400, {"error": "invalid_request"}),
    "twitch": (400, {"status": 400, "message": "Invalid refresh token"}),
    "slack": (200, {"ok": False, "error": "invalid_refresh_token"}),
}

GITHUB_BAD_CLIENT = {
    "error": "incorrect_client_credentials",
    "error_description": "The client_id and/or client_secret passed are incorrect.",
    "error_uri": "https://docs.github.com/apps/managing-oauth-apps/"
    "troubleshooting-oauth-app-access-token-request-errors/#incorrect-client-credentials",
}

WRONG_CLIENT = {
    "spotify": (
        400,
        {"error": "invalid_client", "error_description": "Invalid client"},
    ),
    "discord": (401, {"error": "invalid_client"}),
    **{
        g: (
            401,
            {
                "error": "invalid_client",
                "error_description": "The OAuth client was not found.",
            },
        )
        for g in GOOGLE
    },
    "github_app": (200, GITHUB_BAD_CLIENT),
    "x": (
        401,
        {
            "error": "unauthorized_client",
            "error_description": "Missing valid authorization header",
        },
    ),
    "linkedin": (
        401,
        {
            "error": "invalid_client",
            "error_description": "Client authentication failed",
        },
    ),
    "reddit": (401, None),
    "twitch": (403, {"status": 403, "message": "invalid client secret"}),
    "slack": (200, {"ok": False, "error": "bad_client_secret"}),
}

# (platform, method) pairs the provider refuses, with its answer (no accepted credentials).
REFUSED_METHOD = {
    ("github_app", "basic"): (200, GITHUB_BAD_CLIENT),
    ("x", "form"): WRONG_CLIENT["x"],
    ("linkedin", "basic"): WRONG_CLIENT["linkedin"],
    ("reddit", "form"): (401, None),
    ("twitch", "basic"): (400, {"status": 400, "message": "missing client secret"}),
    ("microsoft", "basic"): (401, "AADSTS7000218"),
}


def assert_no_store(response: httpx.Response) -> None:
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("platform", ALL)
def test_success_answer_has_the_providers_shape(platform, grant, refresh, truth):
    g = grant(platform)
    assert g["access_token"].startswith("sbx_at_") and len(g["access_token"]) == 7 + 32
    assert g["refresh_token"].startswith("sbx_rt_") and len(g["refresh_token"]) == 7 + 32

    response = refresh(platform, g["refresh_token"])

    assert response.status_code == 200, response.text
    assert_no_store(response)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    expires_in, token_type, refresh_kind = SUCCESS[platform]
    after = truth(g["grant_id"])
    assert body["access_token"] == after["live_access_token"] != g["access_token"]
    assert body["access_token"].startswith("sbx_at_")
    assert body["token_type"] == token_type
    if expires_in is None:
        assert 13000 <= body["expires_in"] <= 15000
    else:
        assert body["expires_in"] == expires_in
    assert "scope" in body
    if refresh_kind == "absent":
        assert "refresh_token" not in body
        assert after["live_refresh_token"] == g["refresh_token"]
    elif refresh_kind == "same":
        assert body["refresh_token"] == g["refresh_token"]
    else:
        assert body["refresh_token"] != g["refresh_token"]
        assert body["refresh_token"] == after["live_refresh_token"]
    assert after["refresh_count"] == 1


def test_provider_specific_success_fields(grant, refresh):
    slack = refresh("slack", grant("slack")["refresh_token"]).json()
    assert slack["ok"] is True and slack["scope"] == "chat:write,channels:read"

    github = refresh("github_app", grant("github_app")["refresh_token"]).json()
    assert github["refresh_token_expires_in"] == 15897600
    assert github["scope"] == ""

    linkedin = refresh("linkedin", grant("linkedin")["refresh_token"]).json()
    assert 31535990 <= linkedin["refresh_token_expires_in"] <= 31536000

    twitch = refresh("twitch", grant("twitch")["refresh_token"]).json()
    assert twitch["scope"] == ["user:read:email", "channel:read:subscriptions"]

    microsoft = refresh("microsoft", grant("microsoft")["refresh_token"]).json()
    assert microsoft["ext_expires_in"] == microsoft["expires_in"]

    for platform in ("spotify", "youtube", "x", "discord", "reddit"):
        assert "refresh_token_expires_in" not in refresh(platform, grant(platform)["refresh_token"]).json()


def test_grant_options_override_lifetime_and_scope(grant, refresh):
    g = grant("twitch", expires_in=120, scope="chat:read chat:edit")
    assert g["expires_in"] == 120
    body = refresh("twitch", g["refresh_token"]).json()
    assert body["expires_in"] == 120
    assert body["scope"] == ["chat:read", "chat:edit"]


@pytest.mark.parametrize("platform", ALL)
@pytest.mark.parametrize("method", ["basic", "form"])
def test_client_authentication_methods(platform, method, grant, refresh, truth):
    g = grant(platform)
    response = refresh(platform, g["refresh_token"], auth=method)
    refused = REFUSED_METHOD.get((platform, method))
    if refused is None:
        assert response.status_code == 200, response.text
        assert truth(g["grant_id"])["refresh_count"] == 1
        return
    status, body = refused
    assert response.status_code == status
    if isinstance(body, str):
        assert body in response.json()["error_description"]
    elif body is None:
        assert response.content == b""
    else:
        assert response.json() == body
    assert truth(g["grant_id"])["refresh_count"] == 0


@pytest.mark.parametrize("platform", sorted(set(ALL) - {"github_app", "microsoft"}))
def test_unknown_refresh_token_answer(platform, refresh):
    response = refresh(platform, "sbx_rt_" + "A" * 32)
    status, body = BAD_TOKEN[platform]
    assert response.status_code == status
    assert response.json() == body
    assert_no_store(response)


def test_github_bad_refresh_token_is_inside_a_200(refresh):
    response = refresh("github_app", "ghr_unknown")
    assert response.status_code == 200
    body = response.json()
    assert body["error"] == "bad_refresh_token"
    assert body["error_description"] == "The refresh token passed is incorrect or expired."
    assert "access_token" not in body


def test_microsoft_bad_refresh_token_has_an_aadsts_code(refresh):
    response = refresh("microsoft", "nope")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_grant"
    assert body["error_description"].startswith("AADSTS70000:")
    assert body["error_codes"] == [70000]


@pytest.mark.parametrize("platform", ALL)
def test_wrong_client_credentials(platform, grant, refresh, truth):
    g = grant(platform)
    response = refresh(platform, g["refresh_token"], credentials=("intruder", "wrong"))
    assert_no_store(response)
    if platform == "microsoft":
        assert response.status_code == 401
        body = response.json()
        assert body["error"] == "invalid_client"
        assert body["error_description"].startswith("AADSTS7000215:")
    else:
        status, body = WRONG_CLIENT[platform]
        assert response.status_code == status
        if body is None:
            assert response.content == b""
            assert response.headers["www-authenticate"] == 'Basic realm="reddit"'
        else:
            assert response.json() == body
    assert truth(g["grant_id"])["refresh_count"] == 0  # nothing spent


def test_right_id_wrong_secret_is_refused_too(grant, refresh, sandbox):
    client_id, _ = sandbox.credentials("spotify")
    response = refresh(
        "spotify",
        grant("spotify")["refresh_token"],
        credentials=(client_id, "not-the-secret"),
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "Invalid client",
    }


def test_default_credentials(sandbox):
    assert sandbox.credentials("spotify") == (
        "sandbox-spotify-id",
        "sandbox-spotify-secret",
    )
    for platform in GOOGLE:
        assert sandbox.credentials(platform) == (
            "sandbox-google-id",
            "sandbox-google-secret",
        )


def test_discord_rejects_a_json_body(grant, http, sandbox, truth):
    g = grant("discord")
    client_id, secret = sandbox.credentials("discord")
    response = http.post(
        sandbox.token_url("discord"),
        json={
            "grant_type": "refresh_token",
            "refresh_token": g["refresh_token"],
            "client_id": client_id,
            "client_secret": secret,
        },
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": "unsupported_grant_type",
        "error_description": "Grant type None is not supported",
    }
    assert truth(g["grant_id"])["refresh_count"] == 0


def test_discord_unsupported_grant_type_names_it(refresh):
    response = refresh("discord", "x", extra={"grant_type": "password"})
    assert response.status_code == 400
    assert response.json()["error_description"] == "Grant type password is not supported"


def test_missing_refresh_token_is_invalid_request(refresh):
    response = refresh("youtube", None)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "Missing required parameter: refresh_token",
    }


def test_reddit_requires_a_descriptive_user_agent(grant, refresh, truth):
    g = grant("reddit")
    for agent in ("python-httpx/0.28.1", "", "python-requests/2.32", "curl/8.5.0"):
        response = refresh("reddit", g["refresh_token"], headers={"User-Agent": agent})
        assert response.status_code == 429, agent
        assert response.json() == {"message": "Too Many Requests", "error": 429}
    assert truth(g["grant_id"])["refresh_count"] == 0
    ok = refresh(
        "reddit",
        g["refresh_token"],
        headers={"User-Agent": "linux:my-app:1.2 (by /u/x)"},
    )
    assert ok.status_code == 200


def test_reddit_rejects_the_httpx_default_user_agent(grant, sandbox):
    g = grant("reddit")
    with httpx.Client() as bare:  # httpx's own User-Agent
        response = bare.post(
            sandbox.token_url("reddit"),
            auth=sandbox.credentials("reddit"),
            data={"grant_type": "refresh_token", "refresh_token": g["refresh_token"]},
        )
    assert response.status_code == 429


def test_microsoft_requires_scope(grant, sandbox, http, truth):
    g = grant("microsoft")
    client_id, secret = sandbox.credentials("microsoft")
    response = http.post(
        sandbox.token_url("microsoft"),
        data={
            "grant_type": "refresh_token",
            "refresh_token": g["refresh_token"],
            "client_id": client_id,
            "client_secret": secret,
        },
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_request"
    assert body["error_description"].startswith("AADSTS90014:")
    assert truth(g["grant_id"])["refresh_count"] == 0


def test_github_answers_form_encoded_without_accept_json(grant, refresh):
    g = grant("github_app")
    response = refresh("github_app", g["refresh_token"], headers={"Accept": "*/*"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-www-form-urlencoded")
    fields = parse_qs(response.text, keep_blank_values=True)
    assert fields["access_token"][0].startswith("sbx_at_")
    assert fields["refresh_token_expires_in"] == ["15897600"]
    assert fields["token_type"] == ["bearer"]
    assert_no_store(response)

    again = refresh("github_app", g["refresh_token"], headers={"Accept": "*/*"})
    assert again.status_code == 200
    assert parse_qs(again.text)["error"] == ["bad_refresh_token"]


def test_google_accepts_json_body_and_shared_route(grant, sandbox, http):
    g = grant("gmail")
    client_id, secret = sandbox.credentials("gmail")
    response = http.post(
        sandbox.token_url("google"),
        json={
            "grant_type": "refresh_token",
            "refresh_token": g["refresh_token"],
            "client_id": client_id,
            "client_secret": secret,
        },
    )
    assert response.status_code == 200, response.text
    assert "refresh_token" not in response.json()


@pytest.mark.parametrize("route", ["google", "youtube", "gmail", "google_calendar"])
def test_every_google_route_refreshes_every_google_grant(route, grant, refresh):
    for platform in GOOGLE:
        assert refresh(platform, grant(platform)["refresh_token"], route=route).status_code == 200


def test_a_token_from_another_provider_is_unknown(grant, refresh):
    response = refresh("spotify", grant("discord")["refresh_token"])
    assert response.status_code == 400
    assert response.json()["error_description"] == "Invalid refresh token"


def test_unknown_and_never_refreshed_platforms_have_no_endpoint(http, sandbox):
    for name in ("github", "myspace"):
        response = http.post(f"{sandbox.base_url}/{name}/token", data={"grant_type": "x"})
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
