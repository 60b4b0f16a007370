"""What the notifier knows of the connections of one batch, and what their events change in it.

A channel that told of a connection's problem (an announcement) tells of its recovery when the
connection works again (a later token.refreshed or connection.created); problems not told yet are
dropped then. A revoked connection drops its untold problems and is owed no recovery. The
re-auth rate limit needs the connection's recent needs_reauth deliveries.

The ledger is read once per batch (``Store.load_ledger``), changed in memory event by event (so
an event sees what the earlier ones of its batch did), and its changes are written in the batch's
transaction: a handful of statements per batch rather than several per event.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

Connection = tuple[uuid.UUID, str]  # (user_id, platform)


@dataclass
class Problem:
    """A problem delivery not finished: pending, or being sent."""

    notice_id: uuid.UUID
    channel: str
    kind: str
    occurred_at: datetime
    status: str
    row: dict[str, Any] | None = None  # taken in by this batch: not in the store yet


@dataclass
class Ledger:
    problems: dict[Connection, list[Problem]] = field(default_factory=lambda: defaultdict(list))
    # channel -> when the problem it announced happened
    announced: dict[Connection, dict[str, datetime]] = field(default_factory=lambda: defaultdict(dict))
    # (connection, channel) -> when its needs_reauth notices (told or to be told) happened
    reauths: dict[tuple[Connection, str], list[datetime]] = field(default_factory=lambda: defaultdict(list))
    # When each connection's earlier problems were last shown over (recovered or revoked).
    resolved: dict[Connection, datetime] = field(default_factory=dict)
    # Written at the batch's end: deliveries of the store to drop, announcements to forget,
    # resolutions to record.
    newly_resolved: dict[Connection, datetime] = field(default_factory=dict)
    drop_stored: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    forget: list[tuple[uuid.UUID, str, datetime]] = field(default_factory=list)

    def recover(self, connection: Connection, at: datetime) -> set[str]:
        """The connection works as of ``at``: its untold problems from before are dropped; returns
        the channels owed a recovered notice (they told of a problem from before, or are telling
        it right now)."""
        telling = {p.channel for p in self.problems[connection] if p.status == "sending" and p.occurred_at <= at}
        self._drop_problems(connection, at)
        announced = self.announced[connection]
        owed = {channel for channel, problem_at in announced.items() if problem_at <= at} | telling
        self._forget(connection, at)
        return owed

    def revoke(self, connection: Connection, at: datetime) -> None:
        self._drop_problems(connection, at)
        self._forget(connection, at)

    def stale(self, connection: Connection, at: datetime) -> bool:
        """A problem from ``at`` is over already: the connection recovered or was revoked since."""
        resolved = self.resolved.get(connection)
        return resolved is not None and at <= resolved

    def _drop_problems(self, connection: Connection, at: datetime) -> None:
        if connection not in self.resolved or self.resolved[connection] < at:
            self.resolved[connection] = self.newly_resolved[connection] = at
        kept = []
        for problem in self.problems[connection]:
            if problem.status != "pending" or problem.occurred_at > at:
                kept.append(problem)
                continue
            if problem.row is not None:
                problem.row["status"] = "dropped"
            else:
                self.drop_stored.append((problem.notice_id, problem.channel))
            if problem.kind == "needs_reauth":
                times = self.reauths[(connection, problem.channel)]
                if problem.occurred_at in times:
                    times.remove(problem.occurred_at)
        self.problems[connection] = kept

    def _forget(self, connection: Connection, at: datetime) -> None:
        announced = self.announced[connection]
        told = [channel for channel, problem_at in announced.items() if problem_at <= at]
        for channel in told:
            del announced[channel]
        if told:
            self.forget.append((connection[0], connection[1], at))

    def reauth_limited(self, connection: Connection, channel: str, at: datetime, interval: timedelta) -> bool:
        """A needs_reauth of this connection on this channel, told or to be told, within
        ``interval`` of ``at``, and not on the other side of the connection's latest recovery or
        revocation: a break after the user reconnected is a new one, told even within the interval
        (else the last word they got would be "connected again" on a broken connection)."""
        resolved = self.resolved.get(connection)

        def apart(other: datetime) -> bool:
            return resolved is not None and min(at, other) < resolved <= max(at, other)

        return any(abs(at - other) < interval and not apart(other) for other in self.reauths[(connection, channel)])

    def taken_in(self, connection: Connection, row: dict[str, Any]) -> None:
        """A delivery of this batch: the later events of the batch see it."""
        if row["status"] != "pending":
            return
        if row["kind"] == "needs_reauth":
            self.reauths[(connection, row["channel"])].append(row["occurred_at"])
        if row["problem"]:
            self.problems[connection].append(
                Problem(row["notice_id"], row["channel"], row["kind"], row["occurred_at"], "pending", row)
            )
