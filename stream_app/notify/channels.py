"""The configured channels: each channel package's ``build_channel(database_url=...)``, which
answers None when the channel is not configured (every channel is off by default)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence

from pydantic import ValidationError

from stream_app.notify.channel import Channel
from stream_app.notify.settings import NotifyConfigurationError, describe_validation_error

log = logging.getLogger(__name__)

CHANNEL_PACKAGES = ("email", "slack", "webhook")


def load_channels(*, database_url: str, packages: Sequence[str] = CHANNEL_PACKAGES) -> list[Channel]:
    """The channels configured, in ``packages``' order. A channel whose settings are wrong stops
    start-up with one line naming the variable (NOTIFY_<NAME>_...)."""
    channels: list[Channel] = []
    for name in packages:
        module_name = f"stream_app.notify.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise  # the package exists but lacks one of its own dependencies
            log.warning("notify: no %s channel in this installation", name)
            continue
        build = getattr(module, "build_channel", None)
        if build is None:
            log.warning("notify: %s has no build_channel; channel skipped", module_name)
            continue
        try:
            channel: Channel | None = build(database_url=database_url)
        except ValidationError as exc:
            raise NotifyConfigurationError(describe_validation_error(exc, prefix=f"NOTIFY_{name.upper()}_")) from None
        if channel is None:
            continue
        if any(known.name == channel.name for known in channels):
            raise NotifyConfigurationError(f"NOTIFY_{name.upper()}_*: a second channel named {channel.name!r}")
        channels.append(channel)
    return channels
