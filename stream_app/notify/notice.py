"""What the notifier tells a channel: one notice per (source event, channel)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

NoticeKind = Literal[
    "refreshed",  # token.refreshed
    "needs_reauth",  # token.needs_reauth
    "refresh_failed",  # token.refresh_failed
    "revoked",  # token.revoked
    "recovered",  # a connection a channel announced as broken works again
    "circuit_opened",  # provider.circuit_changed, state open
    "circuit_closed",  # provider.circuit_changed, state closed
]

# A recovered notice's id is derived from the event that showed the recovery, so a replay of
# that event derives the same id and the dedupe store recognises it.
_RECOVERED_NAMESPACE = uuid.UUID("5d8a0f3e-2b1c-4f57-9a43-7c1e0b6d2e91")


def recovered_notice_id(event_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_RECOVERED_NAMESPACE, str(event_id))


@dataclass(frozen=True)
class Notice:
    """One thing to tell one channel.

    ``notice_id`` is the delivery's idempotency key (with the channel's name) and the signed
    webhook's ``webhook-id``: the source event's ``event_id``, or ``recovered_notice_id`` of it.
    ``event`` is the source event as published (its JSON object: envelope and fields). Events
    never carry a plain-text token, and the notifier keeps nothing else of a record.
    """

    notice_id: uuid.UUID
    kind: NoticeKind
    platform: str
    user_id: uuid.UUID | None  # None for a provider's circuit notices
    occurred_at: datetime
    event: Mapping[str, Any]
    # A circuit notice: whether it changes the platform as a whole (the first worker's circuit
    # to open, or the last one's to close). Channels that speak of platforms, not of workers,
    # tell only those. Known when the notice is taken in (routed), not kept.
    platform_wide: bool = True


_DISPLAY_NAMES = {
    "spotify": "Spotify",
    "discord": "Discord",
    "youtube": "YouTube",
    "gmail": "Gmail",
    "google_calendar": "Google Calendar",
    "github": "GitHub",
    "github_app": "GitHub",
    "x": "X",
    "linkedin": "LinkedIn",
    "reddit": "Reddit",
    "twitch": "Twitch",
    "microsoft": "Microsoft",
    "slack": "Slack",
}


def display_name(platform: str) -> str:
    """A platform's name for people ("Spotify"); an unknown key is shown title-cased."""
    return _DISPLAY_NAMES.get(platform, platform.replace("_", " ").title())
