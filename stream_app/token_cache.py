"""A process-local cache of sealed connection rows, for ``get_valid_access_token``.

It holds what deciding and serving a token reads (the ciphertexts, the expiry, the status),
never a plain-text token: a hit still decrypts, per call. An entry lives at most
TOKEN_CACHE_TTL_SECONDS from the moment its read began, the least recently used entry goes
when TOKEN_CACHE_MAX_ENTRIES are held, and an outcome this process stores drops its entry
at once (RefreshEngine's ``on_stored``). What another process changes is seen within the TTL
(docs/api-latency.md has the trade-off).

Concurrent misses of one key share one read (single flight). A hit in the last fifth of its
entry's TTL starts the key's next read in the background, so a key called steadily is not
read on a caller's path. A read that was under way when the key was invalidated is not
stored: its row may predate the outcome.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from stream_app.db.models import ConnectionRow

Key = tuple[uuid.UUID, str]
Load = Callable[[], Awaitable[ConnectionRow | None]]
REFRESH_AHEAD_FRACTION = 0.8

# The columns deciding and serving a token read (decide_refresh, TokenService._usable_token).
SEALED_COLUMNS = (
    "user_id",
    "platform",
    "access_token",
    "refresh_token",
    "token_expires_at",
    "token_lifetime_seconds",
    "status",
    "refresh_not_before",
)


def sealed_copy(row: ConnectionRow) -> ConnectionRow:
    """A detached copy of ``row`` with only SEALED_COLUMNS: ciphertexts, expiry and status."""
    return ConnectionRow(**{column: getattr(row, column) for column in SEALED_COLUMNS})


@dataclass(frozen=True, slots=True)
class _Entry:
    row: ConnectionRow
    read_at: float  # when its read began, on the cache's clock


class TokenCache:
    """Sealed rows by (user_id, platform), bounded by a TTL and a size; ``ttl_seconds=0`` turns
    it off (every call reads, no read is shared)."""

    def __init__(self, ttl_seconds: float, max_entries: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._reads: dict[Key, asyncio.Task[ConnectionRow | None]] = {}

    @property
    def enabled(self) -> bool:
        return self.ttl_seconds > 0

    def get(self, key: Key, reload: Load | None = None) -> ConnectionRow | None:
        """The cached sealed row, if one younger than the TTL is held. Near the end of its TTL,
        ``reload`` reads its successor in the background (one read per key at a time)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        age = self.clock() - entry.read_at
        if age >= self.ttl_seconds:
            del self._entries[key]
            return None
        if reload is not None and age >= REFRESH_AHEAD_FRACTION * self.ttl_seconds and key not in self._reads:
            self._start_read(key, reload)
        self._entries.move_to_end(key)
        return entry.row

    async def read(self, key: Key, load: Load) -> ConnectionRow | None:
        """The row as ``load`` reads it now, cached; callers of one key that come while its read
        runs share it. A caller that is cancelled leaves the read to the others."""
        if not self.enabled:
            return await load()
        task = self._reads.get(key) or self._start_read(key, load)
        return await asyncio.shield(task)

    def _start_read(self, key: Key, load: Load) -> asyncio.Task[ConnectionRow | None]:
        task = asyncio.create_task(self._read_and_store(key, load, self.clock()))
        task.add_done_callback(_retrieve_exception)
        self._reads[key] = task
        return task

    async def _read_and_store(self, key: Key, load: Load, read_at: float) -> ConnectionRow | None:
        try:
            row = await load()
        finally:
            current = self._reads.get(key) is asyncio.current_task()
            if current:
                del self._reads[key]
        if current and row is not None:  # not invalidated while it ran
            self._store(key, _Entry(sealed_copy(row), read_at))
        return row

    def _store(self, key: Key, entry: _Entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def invalidate(self, user_id: uuid.UUID, platform: str) -> None:
        """Forget ``(user_id, platform)``; a read of it under way is not stored (it may predate
        what was just committed), and the next caller starts a new one."""
        key = (user_id, platform)
        self._entries.pop(key, None)
        self._reads.pop(key, None)

    async def aclose(self, grace_seconds: float) -> None:
        """Let the reads under way finish (within ``grace_seconds``, else they are cancelled) and
        forget every entry: before the database they use is closed."""
        reads = list(self._reads.values())
        if reads:
            _, unfinished = await asyncio.wait(reads, timeout=grace_seconds)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        self._reads.clear()
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def sealed_rows(self) -> list[ConnectionRow]:
        """Every row held (for tests and diagnostics)."""
        return [entry.row for entry in self._entries.values()]


def _retrieve_exception(task: asyncio.Task[ConnectionRow | None]) -> None:
    # Its callers see the exception. A read nobody awaits (ahead of the TTL, or every caller
    # left) fails quietly: the entry expires and the next caller reads, and meets the error.
    if not task.cancelled():
        task.exception()
