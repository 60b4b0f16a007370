"""When the broker cannot take the scan's requests, or a request was lost, the scanning worker
refreshes those connections itself."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from agents.local import LocalRefreshes
from schemas import TokenExpiring


class Engine:
    def __init__(self, busy: set[uuid.UUID] | None = None, fail: bool = False) -> None:
        self.refreshed: list[tuple[uuid.UUID, str, str, Any]] = []
        self.busy = busy or set()
        self.fail = fail

    def in_flight(self, user_id: uuid.UUID, platform: str) -> bool:
        return user_id in self.busy

    async def refresh(self, user_id: uuid.UUID, platform: str, *, trigger: str, wait_for_others: Any) -> None:
        self.refreshed.append((user_id, platform, trigger, wait_for_others))
        if self.fail:
            raise ConnectionRefusedError("the database is away")


def requests(count: int) -> list[TokenExpiring]:
    return [TokenExpiring(user_id=uuid.uuid4(), platform="spotify", token_expires_at=None) for _ in range(count)]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_connections_in_flight_here_are_skipped_and_failures_only_logged() -> None:
    page = requests(3)
    engine = Engine(busy={page[0].user_id}, fail=True)
    local = LocalRefreshes(engine, max_in_flight=10)  # type: ignore[arg-type]
    local.start(page, "lost_request")
    await settle()
    assert [u for u, *_ in engine.refreshed] == [page[1].user_id, page[2].user_id]
