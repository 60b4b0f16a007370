"""The email channel (``NOTIFY_EMAIL_*``): re-auth and recovered emails to the user over SMTP.
Off unless NOTIFY_EMAIL_SMTP_HOST is set; see docs/notifiers-email.md."""

from __future__ import annotations

from stream_app.notify.channel import Channel
from stream_app.notify.email.channel import EmailChannel
from stream_app.notify.email.lookup import AddressLookup, HttpLookup, SqlLookup
from stream_app.notify.email.settings import EmailSettings, async_database_url
from stream_app.notify.email.templates import Templates

__all__ = ["EmailChannel", "EmailSettings", "build_channel"]


def build_channel(*, database_url: str, settings: EmailSettings | None = None) -> Channel | None:
    """The email channel, or None when NOTIFY_EMAIL_SMTP_HOST is unset. Bad settings (a missing
    NOTIFY_EMAIL_FROM, a broken override template, ...) raise pydantic's ValidationError.
    ``database_url`` is the notifier's own: the SQL lookup's default database."""
    settings = settings if settings is not None else EmailSettings()
    if not settings.enabled:
        return None
    templates = Templates(settings.templates_dir, reconnect_url=settings.reconnect_url)
    return EmailChannel(settings, _lookup(settings, database_url), templates)


def _lookup(settings: EmailSettings, database_url: str) -> AddressLookup:
    if settings.lookup_sql is not None:
        url = settings.lookup_database_url.get_secret_value() if settings.lookup_database_url else database_url
        return SqlLookup(settings.lookup_sql, async_database_url(url), timeout_seconds=settings.lookup_timeout_seconds)
    assert settings.lookup_url is not None  # noqa: S101 (the settings require one of the two)
    token = settings.lookup_bearer_token.get_secret_value() if settings.lookup_bearer_token else None
    return HttpLookup(settings.lookup_url, bearer_token=token, timeout_seconds=settings.lookup_timeout_seconds)
