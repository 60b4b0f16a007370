"""The signed webhook channel (Standard Webhooks): every notice POSTed to the product's endpoint.
docs/webhooks.md describes the request and how to verify it."""

from __future__ import annotations

from stream_app.notify.channel import Channel
from stream_app.notify.webhook.channel import WebhookChannel
from stream_app.notify.webhook.settings import WebhookSettings

__all__ = ["WebhookChannel", "WebhookSettings", "build_channel"]


def build_channel(*, database_url: str) -> Channel | None:
    """The webhook channel, or None when NOTIFY_WEBHOOK_URL is unset. Invalid settings raise
    pydantic's ValidationError. (The channel needs no database.)"""
    settings = WebhookSettings()
    if settings.url is None:
        return None
    return WebhookChannel(settings)
