"""The interface between the notifier's delivery core and its channels (email, Slack, webhook).

The core consumes the topics, records one delivery per (notice_id, channel) in its Postgres
store (the dedupe key), and hands due deliveries to the channel; a channel only formats and
sends, and says how a failed send should be treated by raising ``DeliveryFailed``.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from stream_app.notify.notice import Notice


class Route(StrEnum):
    SKIP = "skip"  # not for this channel
    NOW = "now"  # one message per notice
    DIGEST = "digest"  # gathered per platform, sent at most once per the channel's digest window


class Channel(Protocol):
    # The channel's name: half of the dedupe key, a metric label, a word in logs.
    name: str
    # Quiet hours and the per-connection rate limit apply to it (it reaches end users).
    user_facing: bool
    # Seconds between two digests of one platform (channels that never route DIGEST: 0).
    digest_window_seconds: float

    def route(self, notice: Notice) -> Route:
        """Whether, and how, this channel tells of ``notice``. A recovered notice is offered only
        to the channels that announced the problem."""
        ...

    async def send(self, notice: Notice) -> None:
        """Deliver one notice; raise DeliveryFailed when it did not arrive."""
        ...

    async def send_digest(self, platform: str, notices: Sequence[Notice]) -> None:
        """Deliver one digest of a platform's pending notices (oldest first); raise
        DeliveryFailed when it did not arrive. Channels that never route DIGEST raise
        NotImplementedError."""
        ...

    async def aclose(self) -> None: ...


class DeliveryFailed(Exception):
    """A send that did not arrive. ``reason`` is short, printable, and never holds a secret or
    a token (it is logged, counted, and written to the notifier's dead-letter topic).

    ``permanent``: retrying cannot help (an HTTP 4xx other than 408/429, an SMTP 5xx, no address
    for the user): the delivery goes to the dead-letter topic. Otherwise it is retried with
    exponential backoff and jitter, and no sooner than ``retry_after`` seconds when given."""

    def __init__(self, reason: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.retry_after = retry_after


def http_failure(what: str, status: int, headers: Mapping[str, str], now: datetime | None = None) -> DeliveryFailed:
    """How an HTTP channel's non-2xx answer is treated: 408 and 429 and 5xx are retried (429 and
    503 no sooner than their Retry-After), any other status is permanent."""
    retry_after = retry_after_seconds(headers.get("retry-after"), now) if status in (429, 503) else None
    permanent = 400 <= status < 500 and status not in (408, 429)
    return DeliveryFailed(f"{what} answered HTTP {status}", permanent=permanent, retry_after=retry_after)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header (RFC 9110: delay-seconds or an HTTP-date) in seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit alone takes "²" and other digits int() refuses
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())
