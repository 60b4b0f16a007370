"""The platform catalog, checked as data against the contract (§5) and providers.md."""

from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest

from stream_app.catalog import (
    CREDENTIAL_KEYS,
    PLATFORMS,
    REFRESHABLE_PLATFORMS,
    PlatformSpec,
    is_known,
    platform,
)
from stream_app.errors import UnknownPlatformError
from stream_app.providers.dialects import DIALECTS

CONTRACT_KEYS = (
    "spotify",
    "discord",
    "youtube",
    "gmail",
    "google_calendar",
    "github",
    "x",
    "linkedin",
    "reddit",
    "twitch",
    "github_app",
    "microsoft",
    "slack",
)
GOOGLE = ("youtube", "gmail", "google_calendar")
REFRESHABLE_SPECS = [spec for spec in PLATFORMS if spec.refreshable]


def spec_id(spec: PlatformSpec) -> str:
    return getattr(spec, "key", str(spec))


def test_keys_are_unique() -> None:
    keys = [spec.key for spec in PLATFORMS]

    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("key", CONTRACT_KEYS)
def test_contract_platform_is_present(key: str) -> None:
    assert is_known(key)
    assert platform(key).key == key


@pytest.mark.parametrize("spec", REFRESHABLE_SPECS, ids=spec_id)
def test_refreshable_platform_is_complete(spec: PlatformSpec) -> None:
    assert spec.token_url is not None
    url = urlparse(spec.token_url)
    assert url.scheme == "https" and url.netloc, spec.token_url
    assert spec.dialect in DIALECTS
    assert spec.auth_method in {"basic", "form"}
    assert spec.default_expires_in is None or spec.default_expires_in > 0
    assert spec.credential_key in CREDENTIAL_KEYS


@pytest.mark.parametrize("spec", PLATFORMS, ids=spec_id)
def test_keys_fit_the_event_and_settings_patterns(spec: PlatformSpec) -> None:
    assert re.fullmatch(r"[a-z][a-z0-9_]{0,31}", spec.key)
    assert re.fullmatch(r"[a-z][a-z0-9_]*", spec.credential_key)


def test_refreshable_platforms_list_matches_the_specs() -> None:
    assert set(REFRESHABLE_PLATFORMS) == {spec.key for spec in REFRESHABLE_SPECS}
    assert set(REFRESHABLE_PLATFORMS) == set(CONTRACT_KEYS) - {"github"}


def test_google_platforms_share_credentials_and_url() -> None:
    specs = [platform(key) for key in GOOGLE]

    assert {spec.credential_key for spec in specs} == {"google"}
    assert {spec.token_url for spec in specs} == {"https://oauth2.googleapis.com/token"}
    assert {spec.auth_method for spec in specs} == {"form"}
    assert CREDENTIAL_KEYS.count("google") == 1


@pytest.mark.parametrize("key", sorted(set(CONTRACT_KEYS) - set(GOOGLE) - {"github"}))
def test_other_platforms_use_their_own_key_for_credentials(key: str) -> None:
    """So the variables are `<KEY>_CLIENT_ID` with the upper-case key (contract §5)."""
    assert platform(key).credential_key == key


def test_github_personal_access_tokens_are_never_refreshed() -> None:
    github = platform("github")

    assert github.refreshable is False
    assert github.token_url is None
    assert "github" not in REFRESHABLE_PLATFORMS
    assert "github" not in CREDENTIAL_KEYS


@pytest.mark.parametrize(
    ("key", "auth_method"),
    [
        ("spotify", "basic"),
        ("x", "basic"),
        ("reddit", "basic"),
        ("discord", "form"),
        ("twitch", "form"),
        ("youtube", "form"),
    ],
)
def test_client_auth_method(key: str, auth_method: str) -> None:
    assert platform(key).auth_method == auth_method


@pytest.mark.parametrize(
    ("key", "token_url"),
    [
        ("spotify", "https://accounts.spotify.com/api/token"),
        ("discord", "https://discord.com/api/oauth2/token"),
        ("github_app", "https://github.com/login/oauth/access_token"),
        ("x", "https://api.x.com/2/oauth2/token"),
        ("linkedin", "https://www.linkedin.com/oauth/v2/accessToken"),
        ("reddit", "https://www.reddit.com/api/v1/access_token"),
        ("twitch", "https://id.twitch.tv/oauth2/token"),
        ("slack", "https://slack.com/api/oauth.v2.access"),
    ],
)
def test_token_urls_are_the_providers(key: str, token_url: str) -> None:
    assert platform(key).token_url == token_url


def test_provider_specific_request_details() -> None:
    assert platform("github_app").headers.get("Accept") == "application/json"
    assert "User-Agent" in platform("reddit").headers
    assert "scope" in platform("microsoft").refresh_params
    assert urlparse(platform("microsoft").token_url or "").netloc == "login.microsoftonline.com"


@pytest.mark.parametrize("key", ["nope", "myspace", "", "Spotify", "google"])
def test_unknown_platform_raises(key: str) -> None:
    assert not is_known(key)
    with pytest.raises(UnknownPlatformError) as caught:
        platform(key)
    assert caught.value.platform == key
