"""A lock per key, held first come first served, kept only while somebody holds or waits for it.

Uncontended (almost always: one refresh per connection at a time), taking and dropping a key
costs two dict operations and no ``asyncio.Lock``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager


class KeyedLocks:
    def __init__(self) -> None:
        # key -> those waiting for it (first come first served); present while it is held
        self._held: dict[Hashable, deque[asyncio.Future[None]]] = {}

    def held(self, key: Hashable) -> bool:
        """Whether anybody holds or waits for ``key``'s lock."""
        return key in self._held

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        waiters = self._held.get(key)
        if waiters is None:
            self._held[key] = deque()
        else:
            turn = asyncio.get_running_loop().create_future()
            waiters.append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                if not turn.cancelled():  # handed the lock, then cancelled: pass it on
                    self._hand_on(key)
                raise  # (a cancelled turn is skipped when the lock is handed on)
        try:
            yield
        finally:
            self._hand_on(key)

    def _hand_on(self, key: Hashable) -> None:
        waiters = self._held[key]
        while waiters:
            turn = waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        del self._held[key]
