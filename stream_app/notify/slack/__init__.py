"""The Slack channel (operators): incoming webhook, Block Kit, digests of re-auths per platform.

On when NOTIFY_SLACK_WEBHOOK_URL is set; see docs/notifiers-slack.md.
"""

from __future__ import annotations

from stream_app.notify.channel import Channel
from stream_app.notify.slack.channel import SlackChannel
from stream_app.notify.slack.settings import SlackSettings

__all__ = ["SlackChannel", "SlackSettings", "build_channel"]


def build_channel(*, database_url: str) -> Channel | None:
    """The Slack channel from NOTIFY_SLACK_*, or None when NOTIFY_SLACK_WEBHOOK_URL is unset.
    A bad setting raises pydantic's ValidationError (naming the variable, never its value).
    The channel keeps nothing, so ``database_url`` is not used."""
    del database_url
    settings = SlackSettings()
    if settings.webhook_url is None:
        return None
    return SlackChannel(settings)
