"""The webhook channel as the notifier loads it (stream_app.notify.channels): off by default, on
with its URL, and a bad setting stops start-up with one line naming the variable, never its value."""

from __future__ import annotations

import base64
import os

import pytest

from stream_app.notify.channels import load_channels
from stream_app.notify.settings import NotifyConfigurationError
from stream_app.notify.webhook import WebhookChannel

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
SHORT = "whsec_" + base64.b64encode(os.urandom(16)).decode()


@pytest.fixture(autouse=True)
def _no_webhook_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("NOTIFY_WEBHOOK_"):
            monkeypatch.delenv(name)


async def test_off_by_default_and_on_with_its_url(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_channels(database_url="sqlite+aiosqlite://", packages=("webhook",)) == []

    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", "https://hooks.example.test/in")
    monkeypatch.setenv("NOTIFY_WEBHOOK_SECRETS", SECRET)
    [channel] = load_channels(database_url="sqlite+aiosqlite://", packages=("webhook",))
    assert isinstance(channel, WebhookChannel) and channel.name == "webhook"
    await channel.aclose()


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"NOTIFY_WEBHOOK_SECRETS": SHORT}, "NOTIFY_WEBHOOK_SECRETS: a secret's key must be 24 to 64 bytes, not 16"),
        ({}, "NOTIFY_WEBHOOK_SECRETS: is required when NOTIFY_WEBHOOK_URL is set (every request is signed)"),
        (
            {"NOTIFY_WEBHOOK_SECRETS": SECRET, "NOTIFY_WEBHOOK_URL": "http://hooks.example.test/in?key=q-secret"},
            "NOTIFY_WEBHOOK_URL: must be https://",
        ),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], line: str
) -> None:
    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", "https://hooks.example.test/in?key=q-secret")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(NotifyConfigurationError) as raised:
        load_channels(database_url="sqlite+aiosqlite://", packages=("webhook",))
    message = str(raised.value)
    assert message.startswith(line) and "\n" not in message
    for secret in (SECRET, SHORT, "q-secret"):
        assert secret.removeprefix("whsec_") not in message
