"""The notifier's dead-letter topic (NOTIFY_DLQ_TOPIC, ``notify.dlq``).

Two kinds of dead letter: a ``record`` the notifier could not read (its position, key when it
has the service's shape, sizes and the reason: never its value), and a ``delivery`` a channel
refused for good or that was given up (the notice: its id, kind, connection and source event,
which is published and holds no token).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from pydantic import BaseModel, ConfigDict, Field

from stream_app.notify.notice import Notice
from stream_app.notify.store import utc_now

log = logging.getLogger(__name__)

_MAX_REASON = 500  # characters: a dead letter stays far below the broker's record size limit

# A key kept readable: a connection's "<user_id>:<platform>" or a platform's key.
_SAFE_KEY = re.compile(r"^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}:)?[a-z][a-z0-9_]{0,31}$")


class NotifyDeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True)

    what: Literal["record", "delivery"]
    reason: str
    occurred_at: datetime = Field(default_factory=utc_now)
    # what = record
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    key_size: int | None = None
    value_size: int | None = None
    # what = delivery
    channel: str | None = None
    notice_id: uuid.UUID | None = None
    kind: str | None = None
    platform: str | None = None
    user_id: uuid.UUID | None = None
    attempts: int | None = None
    event: dict[str, Any] | None = None


def readable_key(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        decoded = key.decode()
    except UnicodeDecodeError:
        return None
    return decoded if _SAFE_KEY.match(decoded) else None


class DeadLetters:
    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer, self.topic = producer, topic

    async def record(
        self, *, topic: str, partition: int, offset: int, key: bytes | None, size: int, reason: str
    ) -> None:
        letter = NotifyDeadLetter(
            what="record",
            reason=reason[:_MAX_REASON],
            topic=topic,
            partition=partition,
            offset=offset,
            key=readable_key(key),
            key_size=None if key is None else len(key),
            value_size=size,
        )
        await self._send(letter, key=readable_key(key))

    async def deliveries(self, notices: Sequence[Notice], *, channel: str, attempts: int, reason: str) -> None:
        for notice in notices:
            letter = NotifyDeadLetter(
                what="delivery",
                reason=reason[:_MAX_REASON],
                channel=channel,
                notice_id=notice.notice_id,
                kind=notice.kind,
                platform=notice.platform,
                user_id=notice.user_id,
                attempts=attempts,
                event=dict(notice.event),
            )
            key = f"{notice.user_id}:{notice.platform}" if notice.user_id else notice.platform
            await self._send(letter, key=key)

    async def _send(self, letter: NotifyDeadLetter, *, key: str | None) -> None:
        # An event may hold a lone surrogate ("\ud800" is valid JSON, and the schemas let it through):
        # it becomes "?" here rather than fail the dead letter (and the delivery with it) for ever.
        value = json.dumps(letter.model_dump(mode="json"), ensure_ascii=False).encode("utf-8", "replace")
        await self._producer.send_and_wait(self.topic, value, key=key.encode() if key else None)
        log.warning("notify: dead-lettered a %s to %s: %s", letter.what, self.topic, letter.reason)
