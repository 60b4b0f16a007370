"""Fault injection: every mode, every rate-limit style, ordering and counting."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest


def test_server_error_does_not_spend_and_is_consumed(grant, fault, refresh, truth):
    g = grant("discord")
    fault("discord", "server_error")
    response = refresh("discord", g["refresh_token"])
    assert response.status_code == 500
    assert response.json()["error"] == "server_error"
    assert truth(g["grant_id"])["refresh_count"] == 0
    assert truth(g["grant_id"])["spent_refresh_tokens"] == []
    assert refresh("discord", g["refresh_token"]).status_code == 200


def test_server_error_status_override_and_count(grant, fault, refresh):
    g = grant("spotify")
    fault("spotify", "server_error", status=503, count=2)
    assert [refresh("spotify", g["refresh_token"]).status_code for _ in range(3)] == [
        503,
        503,
        200,
    ]


def test_faults_are_consumed_in_order(grant, fault, refresh, sandbox, http):
    g = grant("spotify")
    fault("spotify", "rate_limit")
    fault("spotify", "server_error")
    pending = http.get(sandbox.admin_url("faults")).json()["pending"]
    assert [f["mode"] for f in pending] == ["rate_limit", "server_error"]
    assert [refresh("spotify", g["refresh_token"]).status_code for _ in range(3)] == [
        429,
        500,
        200,
    ]
    assert http.get(sandbox.admin_url("faults")).json()["pending"] == []


def test_faults_are_per_platform(grant, fault, refresh):
    fault("spotify", "server_error")
    assert refresh("discord", grant("discord")["refresh_token"]).status_code == 200
    assert refresh("spotify", grant("spotify")["refresh_token"]).status_code == 500


def test_clearing_faults(grant, fault, refresh, sandbox, http):
    fault("spotify", "server_error", count=5)
    assert http.delete(sandbox.admin_url("faults")).json() == {"pending": []}
    assert refresh("spotify", grant("spotify")["refresh_token"]).status_code == 200


# -- rate limits --------------------------------------------------------------------------


def test_default_rate_limit_style_is_retry_after_seconds(grant, fault, refresh, truth):
    g = grant("spotify")
    fault("spotify", "rate_limit", retry_after=1.5)
    response = refresh("spotify", g["refresh_token"])
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert "x-rate-limit-reset" not in response.headers
    assert truth(g["grant_id"])["refresh_count"] == 0


def test_discord_default_rate_limit_has_the_json_body(grant, fault, refresh):
    fault("discord", "rate_limit", retry_after=64.57)
    response = refresh("discord", grant("discord")["refresh_token"])
    assert response.status_code == 429
    body = response.json()
    assert body == {
        "message": "You are being rate limited.",
        "retry_after": 64.57,
        "global": False,
    }
    assert response.headers["retry-after"] == "65"
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert response.headers["x-ratelimit-reset-after"] == "64.57"


def test_x_default_rate_limit_has_an_epoch_reset(grant, fault, refresh):
    fault("x", "rate_limit", retry_after=30)
    before = time.time()
    response = refresh("x", grant("x")["refresh_token"])
    assert response.status_code == 429
    reset = int(response.headers["x-rate-limit-reset"])
    assert before + 30 <= reset <= time.time() + 31
    assert response.headers["x-rate-limit-remaining"] == "0"
    assert "retry-after" not in response.headers


@pytest.mark.parametrize(
    "style",
    ["retry_after_seconds", "retry_after_date", "discord_body", "x_reset", "none"],
)
def test_each_rate_limit_style(style, grant, fault, refresh):
    fault("spotify", "rate_limit", retry_after=20, rate_limit_style=style)
    before = time.time()
    response = refresh("spotify", grant("spotify")["refresh_token"])
    assert response.status_code == 429
    headers = response.headers
    if style == "retry_after_seconds":
        assert headers["retry-after"] == "20"
    elif style == "retry_after_date":
        when = email.utils.parsedate_to_datetime(headers["retry-after"]).timestamp()
        assert before + 19 <= when <= time.time() + 21
        assert headers["retry-after"].endswith("GMT")
    elif style == "discord_body":
        assert response.json()["retry_after"] == 20
        assert response.json()["global"] is False
        assert headers["retry-after"] == "20"
    elif style == "x_reset":
        assert "retry-after" not in headers
        assert before + 20 <= int(headers["x-rate-limit-reset"]) <= time.time() + 21
    else:
        assert "retry-after" not in headers
        assert "x-rate-limit-reset" not in headers


def test_reddit_and_twitch_rate_limits_carry_their_headers(grant, fault, refresh):
    fault("reddit", "rate_limit", retry_after=7)
    reddit = refresh("reddit", grant("reddit")["refresh_token"])
    assert reddit.status_code == 429
    assert reddit.headers["x-ratelimit-remaining"] == "0"
    assert reddit.headers["x-ratelimit-reset"] == "7"

    fault("twitch", "rate_limit", retry_after=7)
    twitch = refresh("twitch", grant("twitch")["refresh_token"])
    assert twitch.status_code == 429
    assert twitch.json() == {"status": 429, "message": "Too Many Requests"}
    assert twitch.headers["ratelimit-remaining"] == "0"


# -- other modes --------------------------------------------------------------------------


def test_forbidden_html_is_a_403_page_with_no_retry_after(grant, fault, refresh, truth):
    g = grant("youtube")
    fault("youtube", "forbidden_html")
    response = refresh("youtube", g["refresh_token"])
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "Error 403 (Forbidden)" in response.text
    assert "retry-after" not in response.headers
    assert truth(g["grant_id"])["refresh_count"] == 0


def test_invalid_client_fault_uses_the_dialect_even_with_good_credentials(grant, fault, refresh):
    fault("spotify", "invalid_client")
    response = refresh("spotify", grant("spotify")["refresh_token"])
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "Invalid client",
    }

    fault("reddit", "invalid_client")
    response = refresh("reddit", grant("reddit")["refresh_token"])
    assert response.status_code == 401
    assert response.content == b""
    assert response.headers["www-authenticate"] == 'Basic realm="reddit"'


def test_echo_token_returns_the_presented_refresh_token(grant, fault, refresh, truth):
    g = grant("slack")
    fault("slack", "echo_token")
    response = refresh("slack", g["refresh_token"])
    assert response.status_code == 400
    assert g["refresh_token"] in response.text
    assert response.json()["refresh_token"] == g["refresh_token"]
    assert truth(g["grant_id"])["spent_refresh_tokens"] == []
    assert refresh("slack", g["refresh_token"]).status_code == 200


def test_timeout_with_status_waits_then_errors_without_spending(grant, fault, refresh, truth):
    g = grant("x")
    fault("x", "timeout", delay=0.3, status=504)
    started = time.monotonic()
    response = refresh("x", g["refresh_token"])
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 504
    assert truth(g["grant_id"])["refresh_count"] == 0


def test_timeout_for_a_patient_client_answers_normally(grant, fault, refresh, truth):
    g = grant("discord")
    fault("discord", "timeout", delay=0.3)
    started = time.monotonic()
    response = refresh("discord", g["refresh_token"])
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200
    assert truth(g["grant_id"])["refresh_count"] == 1


def test_timeout_for_a_client_that_gives_up_spends_nothing(grant, fault, refresh, truth, sandbox, http):
    g = grant("discord")
    fault("discord", "timeout", delay=0.4)
    with pytest.raises(httpx.ReadTimeout):
        refresh("discord", g["refresh_token"], timeout=0.1)
    time.sleep(0.6)
    assert truth(g["grant_id"])["refresh_count"] == 0
    assert http.get(sandbox.admin_url("stats")).json()["by_outcome"] == {"client_gone": 1}
    assert refresh("discord", g["refresh_token"]).status_code == 200


def test_lost_response_spends_the_token_but_never_answers(grant, fault, refresh, truth):
    g = grant("discord")
    fault("discord", "lost_response", delay=0.05)
    with pytest.raises(httpx.TransportError):
        refresh("discord", g["refresh_token"])
    state = truth(g["grant_id"])
    assert state["refresh_count"] == 1
    assert state["spent_refresh_tokens"] == [g["refresh_token"]]
    # The lockout: the client still holds the spent token.
    assert refresh("discord", g["refresh_token"]).json() == {"error": "invalid_grant"}


def test_google_faults_follow_the_grant_on_the_shared_route(grant, fault, refresh):
    youtube, gmail = grant("youtube"), grant("gmail")
    fault("youtube", "server_error")
    assert refresh("gmail", gmail["refresh_token"], route="google").status_code == 200
    assert refresh("youtube", youtube["refresh_token"], route="google").status_code == 500

    fault("google", "forbidden_html")  # any of the three
    assert refresh("gmail", gmail["refresh_token"], route="gmail").status_code == 403


def test_latency_is_added_to_every_token_request(grant, refresh, sandbox, http):
    assert http.post(sandbox.admin_url("latency"), json={"seconds": 0.2}).json() == {"seconds": 0.2}
    g = grant("spotify")
    started = time.monotonic()
    assert refresh("spotify", g["refresh_token"]).status_code == 200
    assert time.monotonic() - started >= 0.2
    http.post(sandbox.admin_url("latency"), json={"seconds": 0})
    assert sandbox.state.latency == 0


@pytest.mark.parametrize(
    "spec",
    [
        {"platform": "spotify", "mode": "explode"},
        {"platform": "myspace", "mode": "server_error"},
        {"platform": "spotify", "mode": "server_error", "count": 0},
        {
            "platform": "spotify",
            "mode": "rate_limit",
            "rate_limit_style": "smoke_signals",
        },
        {"platform": "spotify", "mode": "server_error", "status": 999},
    ],
)
def test_bad_fault_requests_are_refused(spec, sandbox, http):
    response = http.post(sandbox.admin_url("faults"), json=spec)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
    assert http.get(sandbox.admin_url("faults")).json()["pending"] == []
