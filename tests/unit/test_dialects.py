"""Each provider's real answers (shared/spec/providers.md) mapped onto the contract's error classes,
and the wait a rate-limited answer asks for."""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stream_app.catalog import platform
from stream_app.errors import (
    InvalidClientError,
    ProviderError,
    ProviderRateLimited,
    ProviderServerError,
    ProviderUnexpectedAnswer,
    ReauthRequiredError,
    RetryableProviderError,
)
from stream_app.privacy import sanitize_provider_text
from stream_app.providers.dialects import raise_for_answer, retry_after_seconds

DEFAULT_WAIT = 42.0
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
GOOGLE_403_HTML = None  # an HTML page: the client hands the dialect no JSON body
GOOGLE = ("youtube", "gmail", "google_calendar")


def answer(
    platform_key: str,
    status: int,
    body: Any,
    headers: Mapping[str, str] | None = None,
    *,
    sanitize: Any = lambda text: text,
) -> None:
    raise_for_answer(
        platform(platform_key).dialect,
        status,
        headers or {},
        body,
        default_wait=DEFAULT_WAIT,
        sanitize=sanitize,
    )


def reauth(platform_key: str, status: int, body: Any, reason: str, in_message: str) -> Any:
    return pytest.param(
        platform_key,
        status,
        body,
        reason,
        in_message,
        id=f"{platform_key}-{status}-{in_message or reason}",
    )


# platform, status, body, expected needs_reauth reason, the provider's text (only its code is kept)
REAUTH = [
    *(
        reauth(
            "spotify",
            400,
            {"error": "invalid_grant", "error_description": text},
            "invalid_grant",
            text,
        )
        for text in (
            "Refresh token revoked",
            "Refresh token expired",
            "Invalid refresh token",
        )
    ),
    reauth("discord", 400, {"error": "invalid_grant"}, "invalid_grant", "invalid_grant"),
    *(
        reauth(
            g,
            400,
            {
                "error": "invalid_grant",
                "error_description": "Token has been expired or revoked.",
            },
            "invalid_grant",
            "Token has been expired or revoked.",
        )
        for g in GOOGLE
    ),
    reauth(
        "github_app",
        200,
        {
            "error": "bad_refresh_token",
            "error_description": "The refresh token passed is incorrect or expired.",
        },
        "invalid_grant",
        "bad_refresh_token",
    ),
    reauth(
        "x",
        400,
        {
            "error": "invalid_request",
            "error_description": "Value passed for the token was invalid.",
        },
        "invalid_grant",
        "Value passed for the token was invalid.",
    ),
    reauth(
        "linkedin",
        400,
        {
            "error": "invalid_request",
            "error_description": "The provided authorization grant or refresh token is invalid, expired or revoked",
        },
        "invalid_grant",
        "invalid, expired or revoked",
    ),
    reauth("reddit", 400, {"error": "invalid_request"}, "invalid_grant", ""),
    reauth(
        "twitch",
        400,
        {"status": 400, "message": "Invalid refresh token"},
        "invalid_grant",
        "Invalid refresh token",
    ),
    reauth(
        "slack",
        200,
        {"ok": False, "error": "invalid_refresh_token"},
        "invalid_grant",
        "invalid_refresh_token",
    ),
    reauth(
        "slack",
        200,
        {"ok": False, "error": "token_revoked"},
        "invalid_grant",
        "token_revoked",
    ),
    reauth(
        "microsoft",
        400,
        {
            "error": "invalid_grant",
            "error_description": (
                "AADSTS70008: The provided authorization code or refresh token has expired due to inactivity."
            ),
        },
        "invalid_grant",
        "AADSTS70008",
    ),
    # Unknown answers: needs_reauth with reason unknown_error (contract §6).
    reauth(
        "spotify",
        400,
        {"error": "invalid_scope", "error_description": "scope grew"},
        "unknown_error",
        "invalid_scope",
    ),
    reauth("discord", 400, {"error": "something_new"}, "unknown_error", "something_new"),
    reauth("gmail", 403, {"error": "something_new"}, "unknown_error", "something_new"),
    reauth(
        "twitch",
        400,
        {"status": 400, "message": "Something else went wrong"},
        "unknown_error",
        "Something else",
    ),
    reauth(
        "x",
        400,
        {"error": "unsupported_grant_type"},
        "unknown_error",
        "unsupported_grant_type",
    ),
    # A 403 that names a verdict is final, not throttling.
    reauth("discord", 403, {"error": "invalid_grant"}, "invalid_grant", "invalid_grant"),
    # The user withdrew consent: its own reason (contract §2 lists reasons as open-ended).
    *(
        reauth(key, status, {"error": "access_denied", "error_description": "consent withdrawn"}, "access_denied", "")
        for key in ("spotify", "youtube", "x")
        for status in (400, 403)
    ),
]


@pytest.mark.parametrize(("platform_key", "status", "body", "reason", "in_message"), REAUTH)
def test_dead_grant_needs_reauth(platform_key: str, status: int, body: Any, reason: str, in_message: str) -> None:
    with pytest.raises(ReauthRequiredError) as caught:
        answer(platform_key, status, body)

    assert caught.value.reason == reason
    assert caught.value.error_class == reason
    assert caught.value.status_code == status
    own_code = body.get("error") if isinstance(body.get("error"), str) else None
    assert caught.value.description.startswith(f"{own_code or reason}: ")
    # The provider's free text is not kept, only its code.
    assert (in_message in caught.value.description) is (in_message in ("", own_code))
    assert not isinstance(caught.value, RetryableProviderError)


INVALID_CLIENT = [
    pytest.param(
        "spotify",
        400,
        {"error": "invalid_client", "error_description": "Invalid client"},
        {},
        id="spotify-400",
    ),
    pytest.param("discord", 401, {"error": "invalid_client"}, {}, id="discord-401"),
    *(
        pytest.param(
            g,
            401,
            {
                "error": "invalid_client",
                "error_description": "The OAuth client was not found.",
            },
            {},
            id=f"{g}-401",
        )
        for g in GOOGLE
    ),
    pytest.param(
        "github_app",
        200,
        {
            "error": "incorrect_client_credentials",
            "error_description": "The client_id and/or client_secret passed are incorrect.",
        },
        {},
        id="github_app-200",
    ),
    pytest.param(
        "x",
        401,
        {
            "error": "unauthorized_client",
            "error_description": "Missing valid authorization header",
        },
        {},
        id="x-401",
    ),
    pytest.param(
        "reddit",
        401,
        None,
        {"WWW-Authenticate": 'Basic realm="reddit"'},
        id="reddit-401-no-body",
    ),
    pytest.param(
        "twitch",
        400,
        {"status": 400, "message": "missing client secret"},
        {},
        id="twitch-400",
    ),
    pytest.param(
        "twitch",
        403,
        {"status": 403, "message": "invalid client secret"},
        {},
        id="twitch-403",
    ),
    pytest.param("slack", 200, {"ok": False, "error": "bad_client_secret"}, {}, id="slack-200"),
    pytest.param(
        "microsoft",
        401,
        {
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided.",
        },
        {},
        id="microsoft-401",
    ),
    # RFC 6749 §5.2: a refused client that used the Authorization header gets a 401 with a
    # Basic challenge, body or not, from any provider.
    pytest.param("spotify", 401, None, {"WWW-Authenticate": 'Basic realm="accounts"'}, id="spotify-401-challenge"),
    pytest.param("x", 401, "<html>nope</html>", {"www-authenticate": "basic"}, id="x-401-challenge-html"),
    pytest.param("discord", 403, {"error": "unauthorized_client"}, {}, id="discord-403-code"),
]


@pytest.mark.parametrize(("platform_key", "status", "body", "headers"), INVALID_CLIENT)
def test_refused_client_is_invalid_client(platform_key: str, status: int, body: Any, headers: dict[str, str]) -> None:
    with pytest.raises(InvalidClientError) as caught:
        answer(platform_key, status, body, headers)

    assert caught.value.error_class == "invalid_client"
    assert caught.value.status_code == status
    assert not isinstance(caught.value, RetryableProviderError)


@pytest.mark.parametrize("platform_key", GOOGLE)
def test_google_403_html_is_throttling_with_the_default_wait(platform_key: str) -> None:
    with pytest.raises(ProviderRateLimited) as caught:
        answer(platform_key, 403, GOOGLE_403_HTML)

    assert caught.value.retry_after == DEFAULT_WAIT
    assert caught.value.status_code == 403
    assert caught.value.error_class == "rate_limited"


def test_403_html_with_retry_after_uses_it() -> None:
    with pytest.raises(ProviderRateLimited) as caught:
        answer("gmail", 403, GOOGLE_403_HTML, {"Retry-After": "7"})

    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599])
@pytest.mark.parametrize("platform_key", ["spotify", "discord", "github_app", "slack", "twitch"])
def test_5xx_is_a_retryable_server_error(platform_key: str, status: int) -> None:
    with pytest.raises(ProviderServerError) as caught:
        answer(platform_key, status, {"error": "server_error"})

    assert caught.value.status_code == status
    assert caught.value.error_class == "server_error"
    assert isinstance(caught.value, RetryableProviderError)


@pytest.mark.parametrize(
    ("platform_key", "headers", "body", "expected"),
    [
        ("spotify", {"Retry-After": "3"}, None, 3.0),
        (
            "discord",
            {"Retry-After": "65"},
            {
                "message": "You are being rate limited.",
                "retry_after": 64.57,
                "global": False,
            },
            64.57,
        ),
        (
            "twitch",
            {},
            None,
            None,
        ),  # no hint: the engine falls back to RATE_LIMIT_DEFAULT_WAIT_SECONDS
    ],
    ids=["spotify", "discord", "no-hint"],
)
def test_429_is_rate_limited(platform_key: str, headers: dict[str, str], body: Any, expected: float | None) -> None:
    with pytest.raises(ProviderRateLimited) as caught:
        answer(platform_key, 429, body, headers)

    assert caught.value.status_code == 429
    assert caught.value.error_class == "rate_limited"
    assert caught.value.retry_after == expected


def test_x_429_waits_until_its_reset_epoch() -> None:
    reset = int(time.time()) + 600

    with pytest.raises(ProviderRateLimited) as caught:
        answer("x", 429, {"title": "Too Many Requests"}, {"x-rate-limit-reset": str(reset)})

    assert caught.value.retry_after == pytest.approx(600, abs=5)


@pytest.mark.parametrize(
    ("platform_key", "body"),
    [
        ("spotify", {"access_token": "at", "token_type": "Bearer", "expires_in": 3600}),
        (
            "github_app",
            {"access_token": "ghu_x", "refresh_token": "ghr_y", "expires_in": 28800},
        ),
        (
            "slack",
            {
                "ok": True,
                "access_token": "xoxe.xoxb-1",
                "refresh_token": "xoxe-1",
                "expires_in": 43200,
            },
        ),
        (
            "twitch",
            {
                "access_token": "at",
                "refresh_token": "rt",
                "expires_in": 14000,
                "scope": [],
                "token_type": "bearer",
            },
        ),
    ],
)
def test_token_answer_passes(platform_key: str, body: dict[str, Any]) -> None:
    answer(platform_key, 200, body)  # raises on anything but a token


@pytest.mark.parametrize(
    "body",
    [
        {"token_type": "Bearer", "expires_in": 3600},
        {"access_token": None},
        {"access_token": 12345},
        None,
        ["at"],
        "at",
        {"access_token": ""},
        {"access_token": "  "},
    ],
    ids=["no-access-token", "null", "number", "not-json", "list", "string", "empty", "blank"],
)
def test_200_without_an_access_token_is_an_unexpected_answer(body: Any) -> None:
    """It may even have spent the refresh token, but it judges no grant: tried again."""
    with pytest.raises(ProviderUnexpectedAnswer) as caught:
        answer("discord", 200, body)

    assert "malformed_response" in caught.value.description
    assert caught.value.error_class == "unexpected_response"
    assert isinstance(caught.value, RetryableProviderError)


GATEWAY_PAGE = "<html><body><h1>401 Authorization Required</h1><hr>nginx</body></html>"
NOT_A_VERDICT = [
    pytest.param("spotify", 401, None, {}, id="401-empty"),
    pytest.param("discord", 401, GATEWAY_PAGE, {"Content-Type": "text/html"}, id="401-html"),
    pytest.param("gmail", 401, None, {}, id="google-401-empty"),
    pytest.param("reddit", 401, None, {}, id="reddit-401-without-challenge"),
    pytest.param("microsoft", 401, None, {"WWW-Authenticate": 'Bearer error="invalid_token"'}, id="401-bearer"),
    pytest.param("x", 403, GATEWAY_PAGE, {"Content-Type": "text/html"}, id="403-html-not-google"),
    pytest.param("x", 403, None, {"WWW-Authenticate": 'Basic realm="x"'}, id="403-challenge"),
    pytest.param("linkedin", 403, {"message": "Forbidden"}, {}, id="403-json-without-code"),
    pytest.param(
        "youtube",
        403,
        {"error": {"code": 403, "message": "The caller does not have permission"}},
        {},
        id="google-403-api-error-not-throttling",
    ),
    pytest.param("spotify", 400, None, {}, id="400-empty"),
    pytest.param("discord", 400, None, {}, id="discord-400-empty"),
    pytest.param("github_app", 404, GATEWAY_PAGE, {"Content-Type": "text/html; charset=utf-8"}, id="404"),
    pytest.param("microsoft", 405, None, {}, id="405"),
    pytest.param("twitch", 408, None, {}, id="408"),
    pytest.param("twitch", 400, {"status": 400}, {}, id="twitch-without-message"),
    pytest.param("slack", 200, {"ok": False}, {}, id="slack-not-ok-without-code"),
    pytest.param("spotify", 302, None, {"Location": "https://login.example/"}, id="302"),
    pytest.param("discord", 418, {"error": ""}, {}, id="empty-code"),
]


@pytest.mark.parametrize(("platform_key", "status", "body", "headers"), NOT_A_VERDICT)
def test_an_answer_without_an_error_code_judges_no_grant(
    platform_key: str, status: int, body: Any, headers: dict[str, str]
) -> None:
    """A gateway's page or an empty 4xx says nothing about the user: retried, never needs_reauth."""
    with pytest.raises(ProviderUnexpectedAnswer) as caught:
        answer(platform_key, status, body, headers)

    assert caught.value.error_class == "unexpected_response"
    assert caught.value.status_code == status
    assert isinstance(caught.value, RetryableProviderError)
    assert "nginx" not in caught.value.description  # the page itself is not kept


def test_an_unexpected_answer_names_only_its_status_and_media_type() -> None:
    with pytest.raises(ProviderUnexpectedAnswer) as caught:
        answer("x", 401, f"<html>{TOKEN}</html>", {"Content-Type": f"text/html; x={TOKEN}"})

    assert caught.value.description == "unexpected answer: HTTP 401 with no OAuth error code (text/html)"


THROTTLING_403 = [
    pytest.param("discord", {"error": "rate_limit_exceeded"}, {}, DEFAULT_WAIT, id="code"),
    pytest.param("x", {"error": "slow_down"}, {"Retry-After": "5"}, 5.0, id="slow-down-with-retry-after"),
    pytest.param(
        "youtube",
        {"error": {"code": 403, "message": "Forbidden", "errors": [{"reason": "userRateLimitExceeded"}]}},
        {},
        DEFAULT_WAIT,
        id="google-reason",
    ),
    pytest.param(
        "gmail",
        {"error": {"code": 403, "message": "Forbidden", "errors": [{"reason": "quotaExceeded"}]}},
        {},
        DEFAULT_WAIT,
        id="google-quota",
    ),
    pytest.param("x", GATEWAY_PAGE, {"Retry-After": "9"}, 9.0, id="html-with-retry-after"),
    pytest.param(
        "github_app",
        {"message": "API rate limit exceeded"},
        {"X-RateLimit-Remaining": "0"},
        DEFAULT_WAIT,
        id="quota-spent-header",
    ),
]


@pytest.mark.parametrize(("platform_key", "body", "headers", "wait"), THROTTLING_403)
def test_a_403_that_says_it_throttles_is_throttling(
    platform_key: str, body: Any, headers: dict[str, str], wait: float
) -> None:
    with pytest.raises(ProviderRateLimited) as caught:
        answer(platform_key, 403, body, headers)

    assert caught.value.status_code == 403
    assert caught.value.retry_after == wait


@pytest.mark.parametrize(
    ("platform_key", "status", "body"),
    [("slack", 200, {"ok": False, "error": "ratelimited"}), ("x", 400, {"error": "slow_down"})],
)
def test_a_throttling_code_is_throttling_whatever_the_status(platform_key: str, status: int, body: Any) -> None:
    with pytest.raises(ProviderRateLimited) as caught:
        answer(platform_key, status, body)

    assert caught.value.retry_after == DEFAULT_WAIT


@pytest.mark.parametrize(
    ("platform_key", "status", "body"),
    [
        ("spotify", 400, {"error": "server_error"}),
        ("microsoft", 400, {"error": "temporarily_unavailable", "error_description": "AADSTS90033"}),
        ("slack", 200, {"ok": False, "error": "internal_error"}),
        ("github_app", 200, {"error": "server_error"}),
    ],
)
def test_a_code_that_blames_the_server_is_a_server_error(platform_key: str, status: int, body: Any) -> None:
    with pytest.raises(ProviderServerError) as caught:
        answer(platform_key, status, body)

    assert caught.value.error_class == "server_error"
    assert caught.value.status_code == status


# --- sanitising ---------------------------------------------------------------------------

TOKEN = "sbx_rt_echoed-refresh-token-0123456789"


@pytest.mark.parametrize(
    ("platform_key", "status", "body"),
    [
        (
            "spotify",
            400,
            {
                "error": "invalid_grant",
                "error_description": f"Invalid refresh token: {TOKEN}",
            },
        ),
        (
            "discord",
            400,
            {"error": "invalid_client", "error_description": f"client for {TOKEN}"},
        ),
        ("twitch", 400, {"status": 400, "message": f"Invalid refresh token {TOKEN}"}),
        ("x", 400, {"error": "invalid_request", "error_description": f"token={TOKEN}"}),
        ("slack", 200, {"ok": False, "error": TOKEN}),
    ],
    ids=["spotify", "discord", "twitch", "x", "slack-code"],
)
def test_echoed_token_never_reaches_the_exception(platform_key: str, status: int, body: Any) -> None:
    with pytest.raises(ProviderError) as caught:
        answer(
            platform_key,
            status,
            body,
            sanitize=lambda text: sanitize_provider_text(text, (TOKEN,)),
        )

    assert TOKEN not in str(caught.value)
    assert TOKEN not in caught.value.description
    assert TOKEN[:8] not in caught.value.description


def test_the_providers_words_go_only_to_a_scrubbed_debug_line(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    def sanitize(text: str) -> str:
        seen.append(text)
        return "SANITISED" if " " in text else text

    with caplog.at_level(logging.DEBUG, logger="stream_app.providers"), pytest.raises(ReauthRequiredError) as caught:
        answer(
            "spotify",
            400,
            {"error": "invalid_grant", "error_description": "Refresh token revoked"},
            sanitize=sanitize,
        )

    assert "invalid_grant: Refresh token revoked" in seen
    assert str(caught.value) == caught.value.description
    assert "Refresh token revoked" not in caught.value.description
    assert [r.levelno for r in caplog.records if "SANITISED" in r.getMessage()] == [logging.DEBUG]


@pytest.mark.parametrize(("status", "headers"), [(429, {}), (503, {}), (403, {})])
def test_bodies_of_retryable_answers_are_not_echoed(status: int, headers: dict[str, str]) -> None:
    body = {"error": f"echo {TOKEN}"} if status != 403 else None

    with pytest.raises(RetryableProviderError) as caught:
        answer("gmail", status, body, headers)

    assert TOKEN not in str(caught.value)


# --- retry_after_seconds ------------------------------------------------------------------


def _http_date(moment: datetime) -> str:
    return email.utils.format_datetime(moment, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        pytest.param({"Retry-After": "17"}, None, 17.0, id="seconds"),
        pytest.param({"retry-after": "5"}, None, 5.0, id="lower-case-name"),
        pytest.param({"RETRY-AFTER": "2.5"}, None, 2.5, id="fractional-seconds"),
        pytest.param({"Retry-After": "-5"}, None, 0.0, id="negative-is-zero"),
        pytest.param(
            {"Retry-After": _http_date(NOW + timedelta(seconds=30))},
            None,
            30.0,
            id="http-date",
        ),
        pytest.param(
            {"Retry-After": _http_date(NOW - timedelta(seconds=30))},
            None,
            0.0,
            id="http-date-past",
        ),
        pytest.param(
            {},
            {
                "message": "You are being rate limited.",
                "retry_after": 64.57,
                "global": False,
            },
            64.57,
            id="discord-body",
        ),
        pytest.param(
            {"Retry-After": "65"},
            {"retry_after": 64.57},
            64.57,
            id="discord-body-is-more-precise",
        ),
        pytest.param(
            {"x-rate-limit-reset": str(int(NOW.timestamp()) + 90)},
            None,
            90.0,
            id="x-epoch",
        ),
        pytest.param(
            {"x-rate-limit-reset": str(int(NOW.timestamp()) - 90)},
            None,
            0.0,
            id="x-epoch-past",
        ),
        pytest.param({"X-Ratelimit-Reset": "42"}, None, 42.0, id="reddit-seconds"),
        pytest.param({}, None, None, id="none"),
        pytest.param({"Content-Type": "text/html"}, {"error": "slow_down"}, None, id="unrelated"),
        pytest.param({"Retry-After": "soon"}, None, None, id="garbage"),
        pytest.param({"Retry-After": ""}, None, None, id="empty"),
        pytest.param({"x-rate-limit-reset": "tomorrow"}, None, None, id="garbage-x-reset"),
        pytest.param({}, {"retry_after": "64"}, None, id="body-string-ignored"),
    ],
)
def test_retry_after_seconds(headers: dict[str, str], body: Any, expected: float | None) -> None:
    waited = retry_after_seconds(headers, body, now=NOW.timestamp())

    if expected is None:
        assert waited is None
    else:
        assert waited == pytest.approx(expected)


def test_retry_after_http_date_is_relative_to_now() -> None:
    header = {"Retry-After": _http_date(NOW + timedelta(minutes=2))}

    assert retry_after_seconds(header, None, now=NOW.timestamp()) == pytest.approx(120)
    assert retry_after_seconds(header, None, now=NOW.timestamp() + 100) == pytest.approx(20)


@pytest.mark.parametrize(
    "body",
    [{"error": "rate_limit_exceeded"}, {"error": {"code": 403, "message": "User Rate Limit Exceeded"}}],
)
def test_403_json_that_is_not_about_the_grant_is_throttling(body: Any) -> None:
    with pytest.raises(ProviderRateLimited) as raised:
        answer("youtube", 403, body)
    assert raised.value.retry_after == DEFAULT_WAIT


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "1e400"}, None),
        ({}, {"retry_after": float("inf")}),
        ({}, {"retry_after": float("nan")}),
    ],
)
def test_non_finite_waits_count_as_unsaid(headers: dict[str, str], body: Any) -> None:
    assert retry_after_seconds(headers, body) is None


def test_waits_are_capped_at_an_hour() -> None:
    assert retry_after_seconds({"x-rate-limit-reset": "99999999999"}, None, now=1e9) == 3600.0
    assert retry_after_seconds({"Retry-After": "86400"}, None) == 3600.0


@pytest.mark.parametrize(
    ("platform_key", "body", "said"),
    [
        ("reddit", {"error": "invalid_request"}, "invalid_request"),
        (
            "x",
            {"error": "invalid_request", "error_description": "Value passed for the token was invalid."},
            "invalid_request: Value passed for the token was invalid.",
        ),
    ],
)
def test_a_mapped_code_keeps_the_providers_own_code(platform_key: str, body: dict[str, str], said: str) -> None:
    with pytest.raises(ReauthRequiredError) as raised:
        answer(platform_key, 400, body)
    assert raised.value.reason == "invalid_grant"
    assert raised.value.description.startswith("invalid_request: ")
    assert "Value passed" not in raised.value.description


def test_discord_reset_headers_are_read_as_seconds_and_as_a_point_in_time() -> None:
    now = 1_800_000_000.0
    assert retry_after_seconds({"X-RateLimit-Reset-After": "2.5"}, None, now=now) == 2.5
    assert retry_after_seconds({"X-RateLimit-Reset": str(now + 3)}, None, now=now) == 3.0
    assert retry_after_seconds({"x-ratelimit-reset": "42"}, None, now=now) == 42.0  # Reddit: seconds


@pytest.mark.parametrize(
    ("headers", "body", "platform_wide"),
    [
        ({}, {"message": "You are being rate limited.", "retry_after": 1.5, "global": True}, True),
        ({}, {"message": "You are being rate limited.", "retry_after": 1.5, "global": False}, False),
        ({"X-RateLimit-Global": "true"}, None, True),
        ({"X-RateLimit-Scope": "global"}, None, True),
        ({"X-RateLimit-Scope": "user", "Retry-After": "3"}, None, False),
    ],
)
def test_a_429_says_whether_the_whole_application_is_limited(
    headers: dict[str, str], body: Any, platform_wide: bool
) -> None:
    with pytest.raises(ProviderRateLimited) as raised:
        answer("discord", 429, body, headers)
    assert raised.value.platform_wide is platform_wide
