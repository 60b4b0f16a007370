"""Recovered notices: a connection whose problem a channel told of works again (it was refreshed,
or connected anew), so that channel tells of the recovery; problems not told yet are dropped.
A revoked connection drops its untold problems and is owed no recovery."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncConnection

from stream_app.notify.channel import Channel, Route
from stream_app.notify.notice import Notice, recovered_notice_id
from stream_app.notify.store import Store, announcements


@dataclass
class RecoveryOutcome:
    dropped: list[str] = field(default_factory=list)  # a channel per dropped delivery
    recovered: list[tuple[Notice, Channel, Route]] = field(default_factory=list)


async def recover(
    store: Store,
    connection: AsyncConnection,
    *,
    event_id: uuid.UUID,
    user_id: uuid.UUID,
    platform: str,
    occurred_at: datetime,
    event: Mapping[str, Any],
    channels: Mapping[str, Channel],
    now: datetime,
) -> RecoveryOutcome:
    """The connection works again as of ``occurred_at`` (token.refreshed, connection.created)."""
    outcome = RecoveryOutcome()
    outcome.dropped = await store.drop_pending_problems(
        connection, user_id=user_id, platform=platform, before=occurred_at, now=now
    )
    announcers = await store.announcing_channels(connection, user_id=user_id, platform=platform, before=occurred_at)
    notice = Notice(
        notice_id=recovered_notice_id(event_id),
        kind="recovered",
        platform=platform,
        user_id=user_id,
        occurred_at=occurred_at,
        event=event,
    )
    for name in sorted(announcers):
        channel = channels.get(name)
        if channel is None:  # no longer configured
            continue
        route = channel.route(notice)
        if route is not Route.SKIP:
            outcome.recovered.append((notice, channel, route))
    await _clear(connection, user_id=user_id, platform=platform, before=occurred_at)
    return outcome


async def revoke(
    store: Store,
    connection: AsyncConnection,
    *,
    user_id: uuid.UUID,
    platform: str,
    occurred_at: datetime,
    now: datetime,
) -> list[str]:
    """The connection was disconnected: its untold problems are dropped, its announcements
    forgotten (a later connection starts afresh). Returns the dropped deliveries' channels."""
    dropped = await store.drop_pending_problems(
        connection, user_id=user_id, platform=platform, before=occurred_at, now=now
    )
    await _clear(connection, user_id=user_id, platform=platform, before=occurred_at)
    return dropped


async def _clear(connection: AsyncConnection, *, user_id: uuid.UUID, platform: str, before: datetime) -> None:
    await connection.execute(
        delete(announcements).where(
            announcements.c.user_id == user_id,
            announcements.c.platform == platform,
            announcements.c.problem_occurred_at <= before,
        )
    )
