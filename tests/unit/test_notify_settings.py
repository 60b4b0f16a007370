"""The notifier's settings: defaults, one-line errors naming the variable (its own, and a
channel's), and `token-refresh notify` refusing to start on them."""

from __future__ import annotations

import sys
import types
from datetime import time

import pytest
from click.testing import CliRunner
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from stream_app.cli import cli
from stream_app.notify.channels import load_channels
from stream_app.notify.settings import NotifyConfigurationError, load_notify_settings


def test_defaults_mirror_the_service_and_keep_keys_longer_than_the_topics() -> None:
    settings = load_notify_settings()
    assert settings.consumer_group == "token-refresh-notify"
    assert settings.notify_dlq_topic == "notify.dlq"
    assert settings.notify_reauth_notice_interval_hours == 24
    assert settings.notify_retention_days > 7  # the topics' default retention
    assert settings.quiet_hours() is None
    assert settings.topic_names()["provider.circuit_changed"] == "provider.circuit_changed"


def test_the_service_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_APP_ID", "acme")
    monkeypatch.setenv("TOPIC_TOKEN_NEEDS_REAUTH", "acme.needs_reauth")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u:p@db/x")
    monkeypatch.setenv("NOTIFY_QUIET_HOURS", "22:00-07:30")
    settings = load_notify_settings()
    assert settings.consumer_group == "acme-notify"
    assert settings.topic_names()["token.needs_reauth"] == "acme.needs_reauth"
    assert settings.database_url.get_secret_value().endswith("@db/x")
    assert settings.quiet_hours() == (time(22, 0), time(7, 30))


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("NOTIFY_QUIET_HOURS", "22-7", "NOTIFY_QUIET_HOURS: must be HH:MM-HH:MM"),
        ("NOTIFY_QUIET_HOURS", "25:00-07:00", "NOTIFY_QUIET_HOURS: must be HH:MM-HH:MM with hours"),
        ("NOTIFY_QUIET_HOURS_TIMEZONE", "Mars/Olympus", "NOTIFY_QUIET_HOURS_TIMEZONE: unknown time zone"),
        ("NOTIFY_REAUTH_NOTICE_INTERVAL_HOURS", "-1", "NOTIFY_REAUTH_NOTICE_INTERVAL_HOURS: "),
        ("NOTIFY_LEASE_SECONDS", "10", "NOTIFY_LEASE_SECONDS: must exceed NOTIFY_SEND_TIMEOUT_SECONDS"),
        ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL", "KAFKA_SASL_USERNAME: is required"),
        ("DATABASE_URL", "postgresql://alice:S3CRET@db/x", "DATABASE_URL: 'postgresql' is not an async driver"),
        ("DATABASE_URL", "postgres//alice:S3CRET@db/x", "DATABASE_URL: is not a database URL"),
        ("NOTIFY_LEASE_SECONDS", "inf", "NOTIFY_LEASE_SECONDS: Input should be a finite number"),
        ("NOTIFY_RETRY_MAX_SECONDS", "nan", "NOTIFY_RETRY_MAX_SECONDS: Input should be a finite number"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(NotifyConfigurationError) as raised:
        load_notify_settings()
    message = str(raised.value)
    assert message.startswith(expected) and "\n" not in message and "S3CRET" not in message


class _ChannelSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFY_FAKE_", extra="ignore", frozen=True)
    url: str | None = None
    retries: int = Field(default=1, ge=0)


def test_a_channels_bad_setting_is_one_line_naming_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    package = types.ModuleType("stream_app.notify.fake")

    def build_channel(*, database_url: str) -> None:
        _ChannelSettings()

    package.build_channel = build_channel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "stream_app.notify.fake", package)
    monkeypatch.setenv("NOTIFY_FAKE_RETRIES", "-3")
    monkeypatch.setenv("NOTIFY_FAKE_URL", "https://secret-in-the-url.example")
    with pytest.raises(NotifyConfigurationError) as raised:
        load_channels(database_url="sqlite+aiosqlite://", packages=["fake"])
    assert str(raised.value).startswith("NOTIFY_FAKE_RETRIES: Input should be greater than or equal to 0")
    assert "-3" not in str(raised.value)


def test_channels_not_configured_or_not_installed_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    package = types.ModuleType("stream_app.notify.fake")
    package.build_channel = lambda *, database_url: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "stream_app.notify.fake", package)
    assert load_channels(database_url="sqlite+aiosqlite://", packages=["fake", "no_such_channel"]) == []


def test_notify_command_refuses_a_bad_setting_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_QUIET_HOURS", "late")
    result = CliRunner().invoke(cli, ["notify"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "token-refresh: configuration error: NOTIFY_QUIET_HOURS: must be HH:MM-HH:MM, e.g. 22:00-07:00"
    ]
