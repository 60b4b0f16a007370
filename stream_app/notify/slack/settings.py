"""The Slack channel's settings (``NOTIFY_SLACK_*``).

The incoming webhook's URL is a credential (whoever holds it can post to the channel): it is a
``SecretStr``, and a refused value is never echoed in the validation error.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from stream_app.notify.channel_settings import ChannelSettings

# What NOTIFY_SLACK_MENTION may be: Slack's own markup for @here, @channel, @everyone, a user
# group (<!subteam^S0123>) or a user (<@U0123>). It is sent as is, so nothing else is allowed.
_MENTION = re.compile(r"^<(?:!here|!channel|!everyone|!subteam\^[A-Z0-9]{1,32}|@[UW][A-Z0-9]{1,32})>$")


def _blank_is_unset(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _http_url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if any(ch.isspace() for ch in url):
        return "must not contain whitespace"
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SlackSettings(ChannelSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFY_SLACK_")

    # NOTIFY_SLACK_ALLOW_HTTP: accept an http:// webhook URL to a host other than a loopback address.
    # (Declared before the URL: its check reads it.)
    allow_http: bool = False
    # NOTIFY_SLACK_WEBHOOK_URL: the incoming webhook (https://hooks.slack.com/services/...). Set: the channel is on.
    webhook_url: SecretStr | None = None
    # NOTIFY_SLACK_DIGEST_MINUTES: at most one re-auth digest per platform per this many minutes.
    digest_minutes: float = Field(default=60, gt=0, le=7 * 24 * 60)
    # NOTIFY_SLACK_TIMEOUT_SECONDS: the whole POST to Slack, connection included.
    timeout_seconds: float = Field(default=10, gt=0, le=300)
    # NOTIFY_SLACK_DASHBOARD_URL: when set, every message has an "Open dashboard" button to it.
    dashboard_url: str | None = Field(default=None, max_length=3000)
    # NOTIFY_SLACK_MENTION: prepended to failure messages (refresh failed, circuit opened), e.g. <!here>.
    mention: str | None = None
    # NOTIFY_SLACK_USER_HASH_KEY: the key of the connection reference shown for a failed refresh
    # (HMAC-SHA256, 8 hex, as the service's logs when given the service's LOG_HASH_KEY). Unset:
    # the first 8 hex digits of the user id.
    user_hash_key: SecretStr | None = None

    @field_validator("webhook_url", "dashboard_url", "mention", "user_hash_key", mode="before")
    @classmethod
    def _unset_when_blank(cls, value: Any) -> Any:
        return _blank_is_unset(value)

    @field_validator("webhook_url")
    @classmethod
    def _webhook_is_an_https_url(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        """https:// only (the URL and the messages would cross the network in clear), but for a
        receiver on this host's loopback (a test's, a local proxy's) or with NOTIFY_SLACK_ALLOW_HTTP."""
        if value is None:
            return None
        url = value.get_secret_value()
        if problem := _http_url_problem(url):
            raise ValueError(problem)
        parts = urlsplit(url)
        if parts.scheme == "http" and not info.data.get("allow_http") and not _is_loopback(parts.hostname or ""):
            raise ValueError(
                "must be an https:// URL (http:// only to a loopback address, or with NOTIFY_SLACK_ALLOW_HTTP=true)"
            )
        return value

    @field_validator("dashboard_url")
    @classmethod
    def _dashboard_is_an_http_url(cls, value: str | None) -> str | None:
        if value is not None and (problem := _http_url_problem(value)):
            raise ValueError(problem)
        return value

    @field_validator("mention")
    @classmethod
    def _mention_is_slack_markup(cls, value: str | None) -> str | None:
        if value is not None and not _MENTION.match(value.strip()):
            raise ValueError("must be Slack mention markup: <!here>, <!channel>, <!subteam^ID> or <@USERID>")
        return value.strip() if value is not None else None

    @property
    def digest_window_seconds(self) -> float:
        return self.digest_minutes * 60
