"""The signed webhook's settings (``NOTIFY_WEBHOOK_*``). The channel is on when the URL is set."""

from __future__ import annotations

from typing import get_args
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from stream_app.notify.channel_settings import ChannelSettings
from stream_app.notify.notice import NoticeKind
from stream_app.notify.webhook.signing import parse_secrets

ALL_KINDS: frozenset[str] = frozenset(get_args(NoticeKind))


class WebhookSettings(ChannelSettings):
    # hide_input_in_errors: a bad secret (or a URL with a credential in its query) is never
    # echoed by the validation error.
    model_config = SettingsConfigDict(env_prefix="NOTIFY_WEBHOOK_")

    # Declared before url: url's check reads it.
    allow_http: bool = Field(
        default=False, description="Accept an http:// URL (a receiver on localhost or a private network only)."
    )
    url: str | None = Field(
        default=None, repr=False, description="The endpoint every notice is POSTed to; unset, the channel is off."
    )
    secrets: SecretStr | None = Field(
        default=None,
        validate_default=True,
        description="Comma-separated whsec_<base64> secrets; each signs every request (several during a rotation).",
    )
    timeout_seconds: float = Field(default=10.0, gt=0, le=120, description="Deadline of one request, in seconds.")
    kinds: str = Field(
        default="", description="Comma-separated notice kinds to send (e.g. needs_reauth,recovered); empty: all."
    )

    @field_validator("url")
    @classmethod
    def _usable_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            raise ValueError("is not a URL") from None
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an absolute https:// URL")
        if parts.scheme == "http" and not info.data.get("allow_http", False):
            raise ValueError(
                "must be https:// (the body names users and their connections); "
                "NOTIFY_WEBHOOK_ALLOW_HTTP=true allows http:// for a local or private receiver"
            )
        return value

    @field_validator("secrets")
    @classmethod
    def _valid_secrets(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None or not _split(value.get_secret_value()):
            if info.data.get("url"):
                raise ValueError("is required when NOTIFY_WEBHOOK_URL is set (every request is signed)")
            return None
        parse_secrets(value.get_secret_value())
        return value

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, value: str) -> str:
        unknown = sorted(_split(value) - ALL_KINDS)
        if unknown:
            raise ValueError(f"unknown notice kinds {unknown}; known: {sorted(ALL_KINDS)}")
        return value

    @property
    def signing_keys(self) -> tuple[bytes, ...]:
        """The signing keys, in the order given."""
        return parse_secrets(self.secrets.get_secret_value()) if self.secrets else ()

    @property
    def sent_kinds(self) -> frozenset[str]:
        return _split(self.kinds) or ALL_KINDS


def _split(value: str) -> frozenset[str]:
    return frozenset(part.strip() for part in value.split(",") if part.strip())
