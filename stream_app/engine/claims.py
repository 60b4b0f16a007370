"""Claiming refreshes: read the row, decide, take the lease, for many connections at once.

Every refresh starts with one such claim. Claims made while another batch is in the database
go together in the next one: one transaction reads every row, takes every lease that is due
and free, and forgets the requests left to refreshes in flight elsewhere.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from schemas import RefreshReason
from stream_app.batching import Coalescer
from stream_app.catalog import platform
from stream_app.clock import utc_now
from stream_app.db import Database
from stream_app.db.bulk import ConnectionState, LeasedConnection, forget_refresh_requests, get_connections
from stream_app.decisions import Action, Decision, RefreshPolicy, decide_refresh
from stream_app.engine.lease import Lease, Leases

MAX_CLAIMS_PER_BATCH = 200
CONCURRENT_CLAIM_BATCHES = 2


@dataclass(frozen=True)
class ClaimRequest:
    user_id: uuid.UUID
    platform: str
    trigger: RefreshReason
    # Another process holds the lease and this caller will not wait for it: clear the row's
    # request mark, so the scan asks again soon after that refresh ends.
    forget_if_held: bool


@dataclass(frozen=True)
class Claim:
    row: ConnectionState | None  # as read, before the lease
    decision: Decision
    held: tuple[Lease, LeasedConnection] | None  # the lease and the row once held, if taken

    @property
    def due(self) -> bool:
        return self.row is not None and self.decision.action is not Action.SKIP


class Claims:
    def __init__(self, database: Database, leases: Leases, policy: RefreshPolicy) -> None:
        self._db = database
        self._leases = leases
        self._policy = policy
        self._releasing: set[asyncio.Task[None]] = set()
        # Callers of one connection are serialised by the engine, so a batch never holds the
        # same connection twice.
        self._batches: Coalescer[ClaimRequest, Claim] = Coalescer(
            self._claim_batch,
            max_batch=MAX_CLAIMS_PER_BATCH,
            max_concurrent=CONCURRENT_CLAIM_BATCHES,
            on_abandoned=self._give_back,
        )

    async def claim(self, request: ClaimRequest) -> Claim:
        return await self._batches.submit(request)

    async def _claim_batch(self, requests: Sequence[ClaimRequest]) -> list[Claim | Exception]:
        now = utc_now()
        async with self._db.transaction() as session:
            rows = await get_connections(session, [(r.user_id, r.platform) for r in requests])
            found = [rows.get((r.user_id, r.platform)) for r in requests]
            decisions = [self._decide(row, r, now) for r, row in zip(requests, found, strict=True)]
            due = [row.id for row, d in zip(found, decisions, strict=True) if row and _due(d)]
            held = await self._leases.acquire_many(session, due) if due else {}
            forget = [
                row.id
                for r, row, d in zip(requests, found, decisions, strict=True)
                if row and _due(d) and row.id not in held and r.forget_if_held
            ]
            if forget:
                await forget_refresh_requests(session, forget)
        return [
            decision
            if isinstance(decision, Exception)
            else Claim(row, decision, held.get(row.id) if row is not None else None)
            for row, decision in zip(found, decisions, strict=True)
        ]

    def _decide(self, row: ConnectionState | None, request: ClaimRequest, now: datetime) -> Decision | Exception:
        """The decision, or what made it fail: that claim alone fails, not its whole batch."""
        try:
            return decide_refresh(row, platform(request.platform), now, self._policy, request.trigger)
        except Exception as exc:
            return exc

    def _give_back(self, _request: ClaimRequest, claim: Claim) -> None:
        """A lease taken for a caller that stopped waiting (cancelled) is released at once."""
        if claim.held is not None:
            task = asyncio.create_task(claim.held[0].release())
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)


def _due(decision: Decision | Exception) -> bool:
    return isinstance(decision, Decision) and decision.action is not Action.SKIP
