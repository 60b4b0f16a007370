"""RFC 7009 revocation: the catalog's table, the settings that point it elsewhere, and what the
client makes of each answer (never a provider's free text, never a token)."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from stream_app.catalog import REVOCABLE_PLATFORMS, platform
from stream_app.crypto import generate_key
from stream_app.errors import ConfigurationError
from stream_app.revocation import RevocationClient
from stream_app.settings import Settings, load_settings

KEY = generate_key()  # made at run time: no key is committed
SECRET = "discord-secret-0123456789"
REFRESH = "rt_0123456789abcdefghijklmnopqrstuv"
ACCESS = "at_0123456789abcdefghijklmnopqrstuv"


def test_the_catalog_revokes_where_rfc_7009_is_spoken_and_says_why_not_elsewhere() -> None:
    assert set(REVOCABLE_PLATFORMS) == {"youtube", "gmail", "google_calendar", "discord", "x"}
    assert platform("youtube").revocation_url == "https://oauth2.googleapis.com/revoke"
    assert platform("youtube").revocation_auth == "none"
    assert platform("discord").revocation_auth == "basic" and platform("x").revocation_auth == "basic"
    assert platform("spotify").revocation_url is None and "no token revocation" in platform("spotify").revocation_note
    assert platform("github_app").revocation_url is None and "not RFC 7009" in platform("github_app").revocation_note
    assert all(platform(key).revoked_token_type == "refresh_token" for key in REVOCABLE_PLATFORMS)


def test_revocation_urls_are_read_per_credential_key_and_held_to_the_token_urls_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOOGLE_REVOCATION_URL", "http://127.0.0.1:8099/google/revoke")
    assert load_settings(encryption_key=KEY).revocation_urls == {"google": "http://127.0.0.1:8099/google/revoke"}

    monkeypatch.setenv("GOOGLE_REVOCATION_URL", "http://revoke.example.com/revoke")
    with pytest.raises(ConfigurationError, match="GOOGLE_REVOCATION_URL: http:// would send"):
        load_settings(encryption_key=KEY)

    monkeypatch.delenv("GOOGLE_REVOCATION_URL")
    monkeypatch.setenv("GOGLE_REVOCATION_URL", "https://oauth2.googleapis.com/revoke")
    with pytest.raises(ConfigurationError, match="GOGLE_REVOCATION_URL: no platform uses the prefix"):
        load_settings(encryption_key=KEY)


def _client(answer: httpx.Response | Exception, seen: list[httpx.Request], **settings: Any) -> RevocationClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if isinstance(answer, Exception):
            raise answer
        return answer

    configured = Settings(
        encryption_key=KEY,
        credentials={"discord": {"client_id": "discord-id", "client_secret": SECRET}},
        retry_base_delay_seconds=0,
        **settings,
    )
    return RevocationClient(httpx.MockTransport(handler), configured)


async def test_discord_is_asked_with_basic_auth_to_revoke_the_refresh_token() -> None:
    seen: list[httpx.Request] = []
    client = _client(httpx.Response(200, json={}), seen)

    revocation = await client.revoke(platform("discord"), refresh_token=REFRESH, access_token=ACCESS)

    assert (revocation.outcome, revocation.token_type, revocation.settled) == ("revoked", "refresh_token", True)
    (request,) = seen
    assert str(request.url) == "https://discord.com/api/oauth2/token/revoke"
    assert dict(parse_qsl(request.content.decode())) == {"token": REFRESH, "token_type_hint": "refresh_token"}
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"discord-id:{SECRET}".encode()).decode()


async def test_google_is_sent_the_token_alone_and_its_invalid_token_means_nothing_is_left() -> None:
    seen: list[httpx.Request] = []
    answer = httpx.Response(400, json={"error": "invalid_token", "error_description": "Token expired or revoked"})
    client = _client(answer, seen, revocation_urls={"google": "http://127.0.0.1:1/google/revoke"})

    revocation = await client.revoke(platform("gmail"), refresh_token=None, access_token=ACCESS)

    assert (revocation.outcome, revocation.token_type, revocation.settled) == ("already_invalid", "access_token", True)
    (request,) = seen
    assert str(request.url) == "http://127.0.0.1:1/google/revoke" and "Authorization" not in request.headers
    assert dict(parse_qsl(request.content.decode())) == {"token": ACCESS, "token_type_hint": "access_token"}


@pytest.mark.parametrize(
    ("answer", "error_class", "calls"),
    [
        (httpx.Response(401, json={"error": "invalid_client"}), "invalid_client", 1),
        (httpx.Response(429, headers={"Retry-After": "5"}), "rate_limited", 1),
        (httpx.Response(503, text="down"), "server_error", 4),  # REFRESH_MAX_ATTEMPTS (3) retries
        (httpx.ConnectError("refused"), "network", 4),
        (
            httpx.Response(400, json={"error": "invalid_request", "error_description": f"bad {REFRESH}"}),
            "unknown_error",
            1,
        ),
    ],
)
async def test_a_refusal_is_a_failure_named_by_class_with_no_provider_text(
    answer: httpx.Response | Exception, error_class: str, calls: int
) -> None:
    seen: list[httpx.Request] = []
    revocation = await _client(answer, seen).revoke(platform("discord"), refresh_token=REFRESH, access_token=ACCESS)

    assert (revocation.outcome, revocation.error_class, revocation.settled) == ("failed", error_class, False)
    assert len(seen) == calls
    assert revocation.error is not None and REFRESH not in revocation.error and "bad" not in revocation.error


async def test_an_echoed_token_in_the_error_code_is_not_shown() -> None:
    seen: list[httpx.Request] = []
    answer = httpx.Response(400, json={"error": REFRESH.lower()})
    revocation = await _client(answer, seen).revoke(platform("discord"), refresh_token=REFRESH, access_token=None)

    assert revocation.error is not None and REFRESH.lower() not in revocation.error
    assert revocation.error.startswith("unknown_error: ")


@pytest.mark.parametrize(
    ("key", "settings", "outcome"),
    [
        ("spotify", {}, "unsupported"),
        ("github_app", {}, "unsupported"),
        ("discord", {"revoke_tokens_on_disconnect": False}, "disabled"),
    ],
)
async def test_no_call_where_the_platform_has_no_endpoint_or_revocation_is_off(
    key: str, settings: dict[str, Any], outcome: str
) -> None:
    seen: list[httpx.Request] = []
    client = _client(httpx.Response(200, json={}), seen, **settings)

    revocation = await client.revoke(platform(key), refresh_token=REFRESH, access_token=ACCESS)

    assert (revocation.outcome, revocation.settled, seen) == (outcome, True, [])


async def test_tokens_of_an_overridden_token_endpoint_never_go_to_the_real_revocation_endpoint() -> None:
    seen: list[httpx.Request] = []
    client = _client(httpx.Response(200, json={}), seen, token_urls={"discord": "http://127.0.0.1:8099/discord/token"})

    revocation = await client.revoke(platform("discord"), refresh_token=REFRESH, access_token=ACCESS)

    assert (revocation.outcome, revocation.settled, seen) == ("unconfigured", True, [])


async def test_nothing_stored_nothing_revoked() -> None:
    seen: list[httpx.Request] = []
    revocation = await _client(httpx.Response(200), seen).revoke(platform("x"), refresh_token=None, access_token=None)
    assert (revocation.outcome, seen) == ("no_token", [])
