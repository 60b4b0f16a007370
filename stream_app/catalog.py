"""The platform catalog: what differs between providers, as data.

Each entry says where the token endpoint is, how the client authenticates there, which
extra parameters or headers a refresh needs, and which error dialect its answers use
(see ``stream_app.providers.dialects``). Adding a platform is an entry here plus, at
most, a dialect function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from stream_app.errors import UnknownPlatformError

AuthMethod = Literal["basic", "form"]
# How a client authenticates at a revocation endpoint: as at the token endpoint, or not at all
# (Google's takes the token alone).
RevocationAuth = Literal["basic", "form", "none"]
RevokedTokenType = Literal["refresh_token", "access_token"]


@dataclass(frozen=True)
class PlatformSpec:
    key: str
    display_name: str
    # Prefix of the settings that configure it: <CREDENTIAL_KEY>_CLIENT_ID, _CLIENT_SECRET, _TOKEN_URL.
    credential_key: str
    token_url: str | None
    auth_method: AuthMethod = "form"
    refreshable: bool = True
    dialect: str = "rfc6749"
    # Typical access-token lifetime, used only when a response omits expires_in.
    default_expires_in: int | None = 3600
    refresh_params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    # Each refresh token works once: a request sent spends it, whether or not its answer comes
    # back, so an answer is waited for longer (LATE_ANSWER_SECONDS).
    single_use_refresh_tokens: bool = False
    # RFC 7009 token revocation, used when a connection is disconnected: the endpoint (None: the
    # platform has none, see revocation_note), how the client authenticates there, and which token
    # is presented (the refresh token: revoking it ends the whole grant, RFC 7009 section 2.1;
    # the access token only when no refresh token is stored).
    revocation_url: str | None = None
    revocation_auth: RevocationAuth = "basic"
    revoked_token_type: RevokedTokenType = "refresh_token"
    revocation_note: str = ""


_GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
_GOOGLE_REVOCATION_URL = "https://oauth2.googleapis.com/revoke"
_NOT_CATALOGUED = "no RFC 7009 endpoint catalogued for this platform: tokens are wiped here, not revoked"


def _google(key: str, name: str) -> PlatformSpec:
    return PlatformSpec(
        key,
        name,
        "google",
        _GOOGLE_TOKEN_URL,
        dialect="google",
        # Takes the token alone (no client authentication); revoking the refresh token revokes
        # the grant. Answers 400 invalid_token for a token it no longer knows.
        revocation_url=_GOOGLE_REVOCATION_URL,
        revocation_auth="none",
    )


PLATFORMS: tuple[PlatformSpec, ...] = (
    PlatformSpec(
        "spotify",
        "Spotify",
        "spotify",
        "https://accounts.spotify.com/api/token",
        auth_method="basic",
        dialect="spotify",
        revocation_note="Spotify has no token revocation endpoint: the user removes the app in their account page",
    ),
    PlatformSpec(
        "discord",
        "Discord",
        "discord",
        "https://discord.com/api/oauth2/token",
        default_expires_in=604800,
        single_use_refresh_tokens=True,
        revocation_url="https://discord.com/api/oauth2/token/revoke",
        revocation_auth="basic",
    ),
    _google("youtube", "YouTube"),
    _google("gmail", "Gmail"),
    _google("google_calendar", "Google Calendar"),
    PlatformSpec(
        "github",
        "GitHub (personal access token)",
        "github",
        None,
        refreshable=False,
        default_expires_in=None,
        revocation_note="a personal access token is revoked by its owner on GitHub; there is no RFC 7009 endpoint",
    ),
    PlatformSpec(
        "github_app",
        "GitHub App",
        "github_app",
        "https://github.com/login/oauth/access_token",
        dialect="github_app",
        default_expires_in=28800,
        headers={"Accept": "application/json"},
        single_use_refresh_tokens=True,
        revocation_note=(
            "GitHub's DELETE /applications/{client_id}/grant (Basic auth, JSON body) is not RFC 7009: "
            "not called; tokens are wiped here"
        ),
    ),
    PlatformSpec(
        "x",
        "X (Twitter)",
        "x",
        "https://api.x.com/2/oauth2/token",
        auth_method="basic",
        dialect="invalid_request_is_bad_grant",
        default_expires_in=7200,
        single_use_refresh_tokens=True,
        revocation_url="https://api.x.com/2/oauth2/revoke",
        revocation_auth="basic",
    ),
    PlatformSpec(
        "linkedin",
        "LinkedIn",
        "linkedin",
        "https://www.linkedin.com/oauth/v2/accessToken",
        dialect="invalid_request_is_bad_grant",
        default_expires_in=5184000,
        revocation_note=_NOT_CATALOGUED,
    ),
    PlatformSpec(
        "reddit",
        "Reddit",
        "reddit",
        "https://www.reddit.com/api/v1/access_token",
        auth_method="basic",
        dialect="invalid_request_is_bad_grant",
        headers={"User-Agent": "server:token-refresh-service:v0.1 (by /u/token-refresh)"},
        revocation_note=_NOT_CATALOGUED,
    ),
    PlatformSpec(
        "twitch",
        "Twitch",
        "twitch",
        "https://id.twitch.tv/oauth2/token",
        dialect="twitch",
        default_expires_in=14000,
        revocation_note=_NOT_CATALOGUED,
    ),
    PlatformSpec(
        "microsoft",
        "Microsoft identity",
        "microsoft",
        "https://login.microsoftonline.com/common/oauth2/v2.0/token",
        refresh_params={"scope": "offline_access openid"},
        revocation_note=_NOT_CATALOGUED,
    ),
    PlatformSpec(
        "slack",
        "Slack",
        "slack",
        "https://slack.com/api/oauth.v2.access",
        auth_method="basic",
        dialect="slack",
        default_expires_in=43200,
        single_use_refresh_tokens=True,
        revocation_note=_NOT_CATALOGUED,
    ),
)

_BY_KEY = {spec.key: spec for spec in PLATFORMS}
REFRESHABLE_PLATFORMS: tuple[str, ...] = tuple(spec.key for spec in PLATFORMS if spec.refreshable)
CREDENTIAL_KEYS: tuple[str, ...] = tuple(dict.fromkeys(spec.credential_key for spec in PLATFORMS if spec.refreshable))


def platform(key: str) -> PlatformSpec:
    try:
        return _BY_KEY[key]
    except KeyError:
        raise UnknownPlatformError(key) from None


def is_known(key: str) -> bool:
    return key in _BY_KEY


REVOCABLE_PLATFORMS: tuple[str, ...] = tuple(spec.key for spec in PLATFORMS if spec.revocation_url is not None)
