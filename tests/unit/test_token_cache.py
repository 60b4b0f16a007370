"""The process-local cache of sealed rows: TTL, size, single flight, invalidation, what it holds."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

import pytest

from stream_app.crypto import generate_key
from stream_app.db.models import ConnectionRow
from stream_app.errors import ConfigurationError
from stream_app.settings import load_settings
from stream_app.token_cache import SEALED_COLUMNS, Key, TokenCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Reads:
    """A stand-in for the database read: counts reads, and can hold them until released."""

    def __init__(self) -> None:
        self.count = 0
        self.release = asyncio.Event()
        self.release.set()

    def of(self, key: Key, sealed_access: str) -> ConnectionRow:
        return ConnectionRow(
            id=uuid.uuid4(),
            user_id=key[0],
            platform=key[1],
            access_token=sealed_access,
            refresh_token="v2:sealed-refresh",
            token_expires_at=datetime(2030, 1, 1),
            status="connected",
            last_sync_error="an unrelated column",
        )

    def loader(self, key: Key, sealed_access: str = "v2:sealed") -> Callable[[], Awaitable[ConnectionRow]]:
        async def load() -> ConnectionRow:
            self.count += 1
            await self.release.wait()
            return self.of(key, sealed_access)

        return load


def key() -> Key:
    return (uuid.uuid4(), "spotify")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_a_read_is_served_until_the_ttl_then_read_again(clock: FakeClock) -> None:
    cache, reads, k = TokenCache(5, 100, clock=clock), Reads(), key()
    await cache.read(k, reads.loader(k))
    clock.now += 4.9
    assert cache.get(k) is not None
    clock.now += 0.1
    assert cache.get(k) is None
    await cache.read(k, reads.loader(k))
    assert reads.count == 2


async def test_the_ttl_counts_from_when_the_read_began(clock: FakeClock) -> None:
    cache, reads, k = TokenCache(5, 100, clock=clock), Reads(), key()
    reads.release.clear()
    read = asyncio.create_task(cache.read(k, reads.loader(k)))
    await asyncio.sleep(0)
    clock.now += 3  # a slow read: what it returns may be 3 s old already
    reads.release.set()
    await read
    clock.now += 2
    assert cache.get(k) is None


async def test_a_hit_near_the_end_of_the_ttl_reads_the_successor_in_the_background(clock: FakeClock) -> None:
    cache, reads, k = TokenCache(5, 100, clock=clock), Reads(), key()
    await cache.read(k, reads.loader(k, "v2:first"))
    clock.now += 3.9
    cached = cache.get(k, reads.loader(k, "v2:second"))
    await asyncio.sleep(0)
    assert cached is not None and cached.access_token == "v2:first" and reads.count == 1

    clock.now += 0.1  # four fifths of the TTL
    reads.release.clear()
    cached = cache.get(k, reads.loader(k, "v2:second"))
    assert cached is not None and cached.access_token == "v2:first"  # served at once, not waiting
    for _ in range(3):
        cache.get(k, reads.loader(k, "v2:third"))  # one read ahead at a time
    reads.release.set()
    await asyncio.sleep(0.01)
    assert reads.count == 2
    clock.now += 4.9  # past the first entry's TTL, within its successor's
    cached = cache.get(k)
    assert cached is not None and cached.access_token == "v2:second"


async def test_a_failed_read_ahead_leaves_the_entry_to_expire(clock: FakeClock) -> None:
    cache, reads, k = TokenCache(5, 100, clock=clock), Reads(), key()
    await cache.read(k, reads.loader(k))

    async def fails() -> ConnectionRow:
        raise RuntimeError("database down")

    clock.now += 4.5
    assert cache.get(k, fails) is not None
    await asyncio.sleep(0.01)
    assert cache.get(k) is not None
    clock.now += 0.5
    assert cache.get(k) is None


async def test_closing_waits_for_a_read_ahead_and_forgets_every_entry(clock: FakeClock) -> None:
    cache, reads, k = TokenCache(5, 100, clock=clock), Reads(), key()
    await cache.read(k, reads.loader(k))
    clock.now += 4.5
    reads.release.clear()
    cache.get(k, reads.loader(k))
    closing = asyncio.create_task(cache.aclose(grace_seconds=5))
    await asyncio.sleep(0)
    assert not closing.done()
    reads.release.set()
    await closing
    assert reads.count == 2 and len(cache) == 0


async def test_closing_cancels_a_read_that_does_not_finish_in_time(clock: FakeClock) -> None:
    cache, reads, k = TokenCache(5, 100, clock=clock), Reads(), key()
    reads.release.clear()
    caller = asyncio.create_task(cache.read(k, reads.loader(k)))
    await asyncio.sleep(0)
    await cache.aclose(grace_seconds=0.01)
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert len(cache) == 0


async def test_ttl_zero_caches_nothing_and_shares_no_read(clock: FakeClock) -> None:
    cache, reads, k = TokenCache(0, 100, clock=clock), Reads(), key()
    await asyncio.gather(*(cache.read(k, reads.loader(k)) for _ in range(3)))
    assert reads.count == 3
    assert cache.get(k) is None and len(cache) == 0


async def test_concurrent_misses_of_one_key_share_one_read(clock: FakeClock) -> None:
    cache, reads, k = TokenCache(5, 100, clock=clock), Reads(), key()
    reads.release.clear()
    callers = [asyncio.create_task(cache.read(k, reads.loader(k))) for _ in range(100)]
    await asyncio.sleep(0)
    reads.release.set()
    rows = await asyncio.gather(*callers)
    assert reads.count == 1
    assert len({id(row) for row in rows}) == 1


async def test_a_cancelled_caller_leaves_the_shared_read_to_the_others(clock: FakeClock) -> None:
    cache, reads, k = TokenCache(5, 100, clock=clock), Reads(), key()
    reads.release.clear()
    first = asyncio.create_task(cache.read(k, reads.loader(k)))
    second = asyncio.create_task(cache.read(k, reads.loader(k)))
    await asyncio.sleep(0)
    first.cancel()
    reads.release.set()
    assert (await second) is not None
    assert reads.count == 1 and cache.get(k) is not None


async def test_a_failed_read_reaches_every_caller_and_is_not_cached(clock: FakeClock) -> None:
    cache, k = TokenCache(5, 100, clock=clock), key()

    async def fails() -> ConnectionRow:
        raise RuntimeError("database down")

    results = await asyncio.gather(cache.read(k, fails), cache.read(k, fails), return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in results)
    assert cache.get(k) is None


async def test_invalidation_drops_the_entry(clock: FakeClock) -> None:
    cache, reads, k = TokenCache(5, 100, clock=clock), Reads(), key()
    await cache.read(k, reads.loader(k))
    cache.invalidate(*k)
    assert cache.get(k) is None


async def test_a_read_under_way_when_invalidated_is_not_stored_and_not_shared(clock: FakeClock) -> None:
    cache, reads, k = TokenCache(5, 100, clock=clock), Reads(), key()
    reads.release.clear()
    before = asyncio.create_task(cache.read(k, reads.loader(k, "v2:before-the-commit")))
    await asyncio.sleep(0)
    cache.invalidate(*k)  # an outcome was committed while that read ran
    after = asyncio.create_task(cache.read(k, reads.loader(k, "v2:after-the-commit")))
    await asyncio.sleep(0)
    reads.release.set()
    assert (await before).access_token == "v2:before-the-commit"
    assert (await after).access_token == "v2:after-the-commit"
    assert reads.count == 2
    cached = cache.get(k)
    assert cached is not None and cached.access_token == "v2:after-the-commit"


async def test_the_least_recently_used_entry_goes_when_full(clock: FakeClock) -> None:
    cache, reads = TokenCache(5, 2, clock=clock), Reads()
    first, second, third = key(), key(), key()
    await cache.read(first, reads.loader(first))
    await cache.read(second, reads.loader(second))
    assert cache.get(first) is not None  # now the most recently used
    await cache.read(third, reads.loader(third))
    assert len(cache) == 2
    assert cache.get(second) is None
    assert cache.get(first) is not None and cache.get(third) is not None


async def test_a_missing_connection_is_not_cached(clock: FakeClock) -> None:
    cache, k, reads = TokenCache(5, 100, clock=clock), key(), 0

    async def missing() -> None:
        nonlocal reads
        reads += 1

    await cache.read(k, missing)
    await cache.read(k, missing)
    assert reads == 2 and len(cache) == 0


async def test_the_cache_holds_a_copy_of_the_sealed_columns_only(clock: FakeClock) -> None:
    cache, reads, k = TokenCache(5, 100, clock=clock), Reads(), key()
    row = await cache.read(k, reads.loader(k))
    cached = cache.get(k)
    assert cached is not None and cached is not row
    held = {name for name in vars(cached) if not name.startswith("_")}
    assert held == set(SEALED_COLUMNS)
    assert cached.access_token == row.access_token and cached.token_expires_at == row.token_expires_at


def test_the_cache_is_on_by_default_for_a_few_seconds() -> None:
    settings = load_settings(encryption_key=generate_key())
    assert 0 < settings.token_cache_ttl_seconds <= 10
    assert settings.token_cache_max_entries >= 1000


@pytest.mark.parametrize(
    ("name", "value"),
    [("TOKEN_CACHE_TTL_SECONDS", "-1"), ("TOKEN_CACHE_TTL_SECONDS", "301"), ("TOKEN_CACHE_MAX_ENTRIES", "0")],
)
def test_a_bad_cache_setting_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        load_settings(encryption_key=generate_key())
