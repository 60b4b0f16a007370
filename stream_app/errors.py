"""The service's exception tree. Split by what happens next, not by where it came from.

    TokenRefreshError
    ├── ConfigurationError          a bad setting: start-up stops with one line
    ├── TokenUnavailableError       no usable token within the on-demand deadline
    ├── DecryptionError             a ciphertext that is malformed, or fails authentication under a configured key
    │                               (one under a key id this process lacks is crypto.UnknownKeyError)
    ├── UnknownPlatformError        a platform key the catalog does not know
    └── ProviderError               the token endpoint refused, or could not be reached
        ├── RetryableProviderError  try again with backoff
        │   ├── ProviderNetworkError    connect/read errors, timeouts      (network)
        │   ├── ProviderServerError     5xx                                 (server_error)
        │   ├── ProviderUnexpectedAnswer  an answer that says nothing about the grant: no OAuth
        │   │                             error code (a gateway's HTML page, an empty 4xx, a 200
        │   │                             without a usable token, malformed HTTP) (unexpected_response)
        │   └── ProviderRateLimited     429 / throttling 403; waits, not an attempt (rate_limited)
        ├── InvalidClientError      our client credentials are refused: status `error`
        └── ReauthRequiredError     the grant is dead (invalid_grant, access_denied, an unknown
                                    OAuth error code): status `needs_reauth`

Messages carry no text of the provider's: a refusal is described by the provider's error code
(when it is a short, well-formed code that quotes no secret) and words of our own
(``stream_app.providers.wording``); other messages name only HTTP statuses and exception types.
"""

from __future__ import annotations


class TokenRefreshError(Exception):
    """Root of every error this service raises on purpose."""


class ConfigurationError(TokenRefreshError):
    """A missing or malformed setting."""


class TokenUnavailableError(TokenRefreshError):
    """The stored access token has expired (or is about to) and its refresh did not complete
    within ON_DEMAND_DEADLINE_SECONDS (a provider throttling or down, another process refreshing).
    The refresh goes on in the background; ask again later."""


class DecryptionError(TokenRefreshError):
    """A ciphertext could not be decrypted: malformed, tampered with, or under another key."""


class UnknownPlatformError(TokenRefreshError):
    def __init__(self, platform: str) -> None:
        super().__init__(f"unknown platform {platform!r}")
        self.platform = platform


class ProviderError(TokenRefreshError):
    """The provider's token endpoint did not give us a token."""

    error_class = "unknown_error"

    def __init__(self, description: str, *, status_code: int | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.status_code = status_code


class RetryableProviderError(ProviderError):
    """Worth another attempt after a backoff."""


class ProviderNetworkError(RetryableProviderError):
    error_class = "network"


class ProviderServerError(RetryableProviderError):
    error_class = "server_error"


class ProviderUnexpectedAnswer(RetryableProviderError):
    """The provider (or a gateway in front of it) answered, but not in a way that judges the
    grant: no OAuth error code, or no usable token. The provider's trouble, never the user's."""

    error_class = "unexpected_response"


class ProviderRateLimited(RetryableProviderError):
    """The provider asked us to slow down; ``retry_after`` is None when it did not say how long."""

    error_class = "rate_limited"

    def __init__(
        self,
        description: str,
        *,
        status_code: int | None = None,
        retry_after: float | None,
        platform_wide: bool = False,
    ) -> None:
        super().__init__(description, status_code=status_code)
        self.retry_after = retry_after
        # The limit is on our client as a whole (Discord's "global"), not on this one grant.
        self.platform_wide = platform_wide


class InvalidClientError(ProviderError):
    error_class = "invalid_client"


class ReauthRequiredError(ProviderError):
    """The grant cannot be refreshed any more; ``reason`` is the contract's needs_reauth reason."""

    def __init__(self, description: str, *, reason: str, status_code: int | None = None) -> None:
        super().__init__(description, status_code=status_code)
        self.reason = reason

    @property
    def error_class(self) -> str:  # type: ignore[override]
        return self.reason
