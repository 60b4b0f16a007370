"""What each provider's token endpoint says, as data.

One :class:`Dialect` per provider (the three Google platforms share one) holds every
answer that differs between providers: accepted client authentication, rotation policy,
lifetimes, the success body's shape and the exact error answers. The logic that picks an
answer lives in :mod:`stream_app.sandbox.exchange`; nothing here does I/O.

Source of truth: ``/work/shared/spec/providers.md``. Where that page is silent or marked
(?), the choice made here is noted next to the entry.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Rotation(enum.StrEnum):
    """What a successful refresh does to the presented refresh token."""

    NONE = "none"  # no refresh_token in the response; the presented one stays valid
    SAME = "same"  # the response repeats the presented refresh token unchanged
    SINGLE_USE = "single_use"  # a new one each time; the presented one is spent at once
    KEEP_OLD = "keep_old"  # a new one each time; the presented one stays valid too


class AuthMethod(enum.StrEnum):
    BASIC = "basic"  # Authorization: Basic base64(client_id:client_secret)
    FORM = "form"  # client_id / client_secret in the form body


class RateLimitStyle(enum.StrEnum):
    RETRY_AFTER_SECONDS = "retry_after_seconds"  # Retry-After: <int seconds>
    RETRY_AFTER_DATE = "retry_after_date"  # Retry-After: <HTTP-date>
    DISCORD_BODY = "discord_body"  # {"message", "retry_after": float, "global"} + Retry-After
    X_RESET = "x_reset"  # x-rate-limit-reset: <epoch seconds>
    NONE = "none"  # a bare 429: no hint at all


@dataclass(frozen=True)
class Answer:
    """One HTTP answer. ``body``: a mapping (sent as JSON), a str (sent as is) or None
    (empty). String values inside a JSON body may hold ``{placeholders}`` filled in by
    :meth:`fill` (e.g. ``{param}``, ``{grant_type}``)."""

    status: int
    body: Mapping[str, Any] | str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def fill(self, **values: object) -> Answer:
        if not isinstance(self.body, Mapping):
            return self
        body = {k: v.format(**values) if isinstance(v, str) else v for k, v in self.body.items()}
        return Answer(self.status, body, self.headers, self.content_type)

    def with_headers(self, **extra: str) -> Answer:
        return Answer(self.status, self.body, {**self.headers, **extra}, self.content_type)


def rfc(status: int, error: str, description: str | None = None, **extra: Any) -> Answer:
    body: dict[str, Any] = {"error": error}
    if description is not None:
        body["error_description"] = description
    body.update(extra)
    return Answer(status, body)


def twitch(status: int, message: str) -> Answer:
    return Answer(status, {"status": status, "message": message})


def slack(error: str) -> Answer:
    return Answer(200, {"ok": False, "error": error})


_GITHUB_DOCS = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/"


def github(error: str, description: str, anchor: str) -> Answer:
    return Answer(
        200,
        {
            "error": error,
            "error_description": description,
            "error_uri": _GITHUB_DOCS + anchor,
        },
    )


def aad(status: int, error: str, code: int, message: str) -> Answer:
    """Microsoft identity platform: RFC shape plus AADSTS code and ``error_codes``."""
    return rfc(status, error, f"AADSTS{code}: {message}", error_codes=[code])


BASIC_AND_FORM = frozenset({AuthMethod.BASIC, AuthMethod.FORM})
BASIC_ONLY = frozenset({AuthMethod.BASIC})
FORM_ONLY = frozenset({AuthMethod.FORM})


@dataclass(frozen=True)
class Dialect:
    name: str
    auth_methods: frozenset[AuthMethod]
    rotation: Rotation
    expires_in: int
    token_type: str
    # Error answers (templates: malformed gets {param}, unsupported_grant gets {grant_type}).
    bad_grant: Answer  # unknown refresh token, or a spent one presented again
    revoked_grant: Answer  # the grant (token family) was revoked
    expired_grant: Answer  # the grant was revoked with reason "expired"
    missing_client: Answer  # no client credentials by a method this provider accepts
    wrong_client: Answer  # unknown client id or wrong secret
    malformed: Answer  # a required parameter is missing ({param})
    unsupported_grant: Answer  # grant_type is not refresh_token ({grant_type})
    rate_limited_body: Mapping[str, Any] | str | None
    default_rate_limit_style: RateLimitStyle = RateLimitStyle.RETRY_AFTER_SECONDS
    # Informational headers on a 429 (templates: {reset_after} s, {reset_at} epoch s).
    rate_limit_headers: Mapping[str, str] = field(default_factory=dict)
    missing_grant_type: Answer | None = None  # default: malformed with param=grant_type
    reuse_kills_family: bool = False  # a spent token presented again revokes the family
    expires_in_spread: int = 0  # expires_in varies by up to +/- this many seconds
    refresh_token_expires_in: int | None = None
    refresh_lifetime_from_grant: bool = False  # True: counts down from the grant's creation
    envelope: Mapping[str, Any] = field(default_factory=dict)  # Slack: {"ok": true}
    mirror_expires_in: tuple[str, ...] = ()  # Microsoft: ext_expires_in
    scope_as_list: bool = False  # Twitch answers scope as a JSON array
    missing_scope: Answer | None = None  # set: the request must carry `scope`
    user_agent_rejected: Answer | None = None  # set: a descriptive User-Agent is required
    accepts_json_body: bool = False  # else a JSON body reads as an empty form
    form_encoded_unless_accept_json: bool = False  # GitHub


_SPOTIFY = Dialect(
    name="spotify",
    auth_methods=BASIC_AND_FORM,
    # "since mid-2026 the field is usually absent": absent by default; a grant created with
    # rotation=keep_old (or single_use) models the occasional rotation.
    rotation=Rotation.NONE,
    expires_in=3600,
    token_type="Bearer",
    bad_grant=rfc(400, "invalid_grant", "Invalid refresh token"),
    revoked_grant=rfc(400, "invalid_grant", "Refresh token revoked"),
    expired_grant=rfc(400, "invalid_grant", "Refresh token expired"),
    missing_client=rfc(400, "invalid_client", "Invalid client"),
    wrong_client=rfc(400, "invalid_client", "Invalid client"),  # a 400, not a 401
    malformed=rfc(400, "invalid_request", "{param} must be supplied"),
    unsupported_grant=rfc(
        400,
        "unsupported_grant_type",
        "grant_type parameter is missing or must be authorization_code, client_credentials or refresh_token",
    ),
    rate_limited_body={"error": {"status": 429, "message": "API rate limit exceeded"}},
)

_DISCORD = Dialect(
    name="discord",
    auth_methods=BASIC_AND_FORM,
    rotation=Rotation.SINGLE_USE,
    expires_in=604800,
    token_type="Bearer",
    bad_grant=rfc(400, "invalid_grant"),
    revoked_grant=rfc(400, "invalid_grant"),
    expired_grant=rfc(400, "invalid_grant"),
    missing_client=rfc(401, "invalid_client"),
    wrong_client=rfc(401, "invalid_client"),
    malformed=rfc(400, "invalid_request", 'Missing "{param}" in request.'),
    unsupported_grant=rfc(400, "unsupported_grant_type", "Grant type {grant_type} is not supported"),
    # A JSON body parses as an empty form: no grant_type, hence Discord's famous answer.
    missing_grant_type=rfc(400, "unsupported_grant_type", "Grant type None is not supported"),
    rate_limited_body={"message": "You are being rate limited.", "global": False},
    default_rate_limit_style=RateLimitStyle.DISCORD_BODY,
    rate_limit_headers={
        "X-RateLimit-Limit": "50",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "{reset_at}",
        "X-RateLimit-Reset-After": "{reset_after}",
        "X-RateLimit-Scope": "user",
    },
)

_GOOGLE_DEAD = rfc(400, "invalid_grant", "Token has been expired or revoked.")
_GOOGLE = Dialect(
    name="google",
    auth_methods=BASIC_AND_FORM,
    rotation=Rotation.NONE,
    expires_in=3599,
    token_type="Bearer",
    bad_grant=_GOOGLE_DEAD,
    revoked_grant=_GOOGLE_DEAD,
    expired_grant=_GOOGLE_DEAD,
    missing_client=rfc(400, "invalid_request", "Could not determine client ID from request."),
    wrong_client=rfc(401, "invalid_client", "The OAuth client was not found."),
    malformed=rfc(400, "invalid_request", "Missing required parameter: {param}"),
    unsupported_grant=rfc(400, "unsupported_grant_type", "Invalid grant_type: {grant_type}"),
    rate_limited_body=rfc(429, "rate_limit_exceeded", "Rate limit exceeded").body,
    accepts_json_body=True,
)

_GITHUB_BAD_CLIENT = github(
    "incorrect_client_credentials",
    "The client_id and/or client_secret passed are incorrect.",
    "#incorrect-client-credentials",
)
_GITHUB_BAD_TOKEN = github(
    "bad_refresh_token",
    "The refresh token passed is incorrect or expired.",
    "#bad-refresh-token",
)
_GITHUB_APP = Dialect(
    name="github_app",
    auth_methods=FORM_ONLY,
    rotation=Rotation.SINGLE_USE,
    expires_in=28800,
    token_type="bearer",
    bad_grant=_GITHUB_BAD_TOKEN,
    revoked_grant=_GITHUB_BAD_TOKEN,
    expired_grant=_GITHUB_BAD_TOKEN,
    missing_client=_GITHUB_BAD_CLIENT,
    wrong_client=_GITHUB_BAD_CLIENT,
    malformed=_GITHUB_BAD_TOKEN,
    unsupported_grant=github(
        "unsupported_grant_type",
        "The grant type is not supported.",
        "#unsupported-grant-type",
    ),
    rate_limited_body={"message": "API rate limit exceeded"},
    refresh_token_expires_in=15897600,
    accepts_json_body=True,
    form_encoded_unless_accept_json=True,
)

_X_DEAD = rfc(400, "invalid_request", "Value passed for the token was invalid.")
_X_CLIENT = rfc(401, "unauthorized_client", "Missing valid authorization header")
_X = Dialect(
    name="x",
    auth_methods=BASIC_ONLY,
    rotation=Rotation.SINGLE_USE,
    expires_in=7200,
    token_type="bearer",
    bad_grant=_X_DEAD,
    revoked_grant=_X_DEAD,
    expired_grant=_X_DEAD,
    missing_client=_X_CLIENT,
    wrong_client=_X_CLIENT,
    malformed=rfc(400, "invalid_request", "Missing required parameter [{param}]."),
    unsupported_grant=rfc(400, "invalid_request", "Value passed for the grant type was invalid."),
    rate_limited_body={
        "title": "Too Many Requests",
        "detail": "Too Many Requests",
        "status": 429,
    },
    default_rate_limit_style=RateLimitStyle.X_RESET,
    reuse_kills_family=True,
)

_LINKEDIN_DEAD = rfc(
    400,
    "invalid_request",
    "The provided authorization grant or refresh token is invalid, expired or revoked",
)
_LINKEDIN_CLIENT = rfc(401, "invalid_client", "Client authentication failed")  # (?) in the spec
_LINKEDIN = Dialect(
    name="linkedin",
    auth_methods=FORM_ONLY,
    rotation=Rotation.SAME,  # repeats the same token; its lifetime keeps counting down
    expires_in=5184000,
    token_type="Bearer",
    bad_grant=_LINKEDIN_DEAD,
    revoked_grant=_LINKEDIN_DEAD,
    expired_grant=_LINKEDIN_DEAD,
    missing_client=_LINKEDIN_CLIENT,
    wrong_client=_LINKEDIN_CLIENT,
    malformed=rfc(400, "invalid_request", 'A required parameter "{param}" is missing'),
    unsupported_grant=rfc(400, "unsupported_grant_type", "Unsupported grant type"),
    rate_limited_body={"status": 429, "message": "Too Many Requests"},
    refresh_token_expires_in=31536000,
    refresh_lifetime_from_grant=True,
)

_REDDIT_CLIENT = Answer(401, None, {"WWW-Authenticate": 'Basic realm="reddit"'})
_REDDIT_DEAD = rfc(400, "invalid_request")
_REDDIT = Dialect(
    name="reddit",
    auth_methods=BASIC_ONLY,
    rotation=Rotation.SAME,  # "sometimes (?)": repeats it by default; override per grant
    expires_in=3600,
    token_type="bearer",
    bad_grant=_REDDIT_DEAD,
    revoked_grant=_REDDIT_DEAD,
    expired_grant=_REDDIT_DEAD,
    missing_client=_REDDIT_CLIENT,
    wrong_client=_REDDIT_CLIENT,
    malformed=_REDDIT_DEAD,
    unsupported_grant=rfc(400, "unsupported_grant_type"),
    rate_limited_body={"message": "Too Many Requests", "error": 429},
    rate_limit_headers={
        "X-Ratelimit-Used": "60",
        "X-Ratelimit-Remaining": "0",
        "X-Ratelimit-Reset": "{reset_after}",
    },
    # A missing or library-default User-Agent: Reddit's 429 (chosen over 403).
    user_agent_rejected=Answer(429, {"message": "Too Many Requests", "error": 429}),
)

_TWITCH_DEAD = twitch(400, "Invalid refresh token")
_TWITCH = Dialect(
    name="twitch",
    auth_methods=FORM_ONLY,
    rotation=Rotation.KEEP_OLD,  # "may change: store the new one": changes; old not revoked
    expires_in=14000,
    expires_in_spread=1000,
    token_type="bearer",
    bad_grant=_TWITCH_DEAD,
    revoked_grant=_TWITCH_DEAD,
    expired_grant=_TWITCH_DEAD,
    missing_client=twitch(400, "missing client secret"),
    wrong_client=twitch(403, "invalid client secret"),
    malformed=twitch(400, "missing {param}"),
    unsupported_grant=twitch(400, "unsupported grant type"),
    rate_limited_body={"status": 429, "message": "Too Many Requests"},
    rate_limit_headers={
        "Ratelimit-Limit": "800",
        "Ratelimit-Remaining": "0",
        "Ratelimit-Reset": "{reset_at}",
    },
    scope_as_list=True,
)

_MICROSOFT = Dialect(
    name="microsoft",
    auth_methods=FORM_ONLY,
    rotation=Rotation.KEEP_OLD,
    expires_in=3600,
    token_type="Bearer",
    bad_grant=aad(400, "invalid_grant", 70000, "Provided grant is invalid or malformed."),
    revoked_grant=aad(
        400,
        "invalid_grant",
        50173,
        "The provided grant has expired due to it being revoked, a fresh auth token is needed.",
    ),
    expired_grant=aad(400, "invalid_grant", 700082, "The refresh token has expired due to inactivity."),
    missing_client=aad(
        401,
        "invalid_client",
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    ),
    wrong_client=aad(401, "invalid_client", 7000215, "Invalid client secret provided."),
    malformed=aad(
        400,
        "invalid_request",
        900144,
        "The request body must contain the following parameter: '{param}'.",
    ),
    unsupported_grant=aad(
        400,
        "unsupported_grant_type",
        70003,
        "The app requested an unsupported grant type '{grant_type}'.",
    ),
    missing_scope=aad(
        400,
        "invalid_request",
        90014,
        "The required field 'scope' is missing from the credential.",
    ),
    rate_limited_body=rfc(429, "temporarily_unavailable", "Too many requests").body,
    mirror_expires_in=("ext_expires_in",),
)

_SLACK_DEAD = slack("invalid_refresh_token")
_SLACK = Dialect(
    name="slack",
    auth_methods=BASIC_AND_FORM,
    rotation=Rotation.SINGLE_USE,
    expires_in=43200,
    token_type="bot",
    bad_grant=_SLACK_DEAD,
    revoked_grant=_SLACK_DEAD,
    expired_grant=_SLACK_DEAD,
    missing_client=slack("invalid_client_id"),
    wrong_client=slack("bad_client_secret"),
    malformed=slack("invalid_arguments"),
    unsupported_grant=slack("invalid_grant_type"),
    rate_limited_body={"ok": False, "error": "ratelimited"},
    envelope={"ok": True},
)

DIALECTS: Mapping[str, Dialect] = {
    d.name: d
    for d in (
        _SPOTIFY,
        _DISCORD,
        _GOOGLE,
        _GITHUB_APP,
        _X,
        _LINKEDIN,
        _REDDIT,
        _TWITCH,
        _MICROSOFT,
        _SLACK,
    )
}


@dataclass(frozen=True)
class Platform:
    key: str
    dialect: str
    default_scope: str


PLATFORMS: Mapping[str, Platform] = {
    p.key: p
    for p in (
        Platform("spotify", "spotify", "user-read-email playlist-read-private"),
        Platform("discord", "discord", "identify guilds"),
        Platform("youtube", "google", "https://www.googleapis.com/auth/youtube.readonly"),
        Platform("gmail", "google", "https://www.googleapis.com/auth/gmail.readonly"),
        Platform(
            "google_calendar",
            "google",
            "https://www.googleapis.com/auth/calendar.readonly",
        ),
        Platform("github_app", "github_app", ""),
        Platform("x", "x", "tweet.read users.read offline.access"),
        Platform("linkedin", "linkedin", "openid profile email w_member_social"),
        Platform("reddit", "reddit", "identity read"),
        Platform("twitch", "twitch", "user:read:email channel:read:subscriptions"),
        Platform("microsoft", "microsoft", "openid profile offline_access User.Read"),
        Platform("slack", "slack", "chat:write,channels:read"),
    )
}

# Route names: every platform key, plus "google" for the endpoint the three Google keys share.
GOOGLE = "google"
GOOGLE_PLATFORMS = tuple(k for k, p in PLATFORMS.items() if p.dialect == GOOGLE)
ROUTES: tuple[str, ...] = (*PLATFORMS, GOOGLE)
NEVER_REFRESHED = frozenset({"github"})  # personal access tokens: no token endpoint


def dialect_for(route: str) -> Dialect:
    """The dialect spoken at ``/{route}/token`` (a platform key or ``google``)."""
    if route == GOOGLE:
        return DIALECTS[GOOGLE]
    return DIALECTS[PLATFORMS[route].dialect]


def credential_key(platform: str) -> str:
    """Platforms sharing one client (the Google ones) share one credential key."""
    return GOOGLE if platform == GOOGLE or PLATFORMS[platform].dialect == GOOGLE else platform


def default_credentials(platform: str) -> tuple[str, str]:
    key = credential_key(platform)
    return f"sandbox-{key}-id", f"sandbox-{key}-secret"
