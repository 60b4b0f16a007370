"""A deadline that is not waited past."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

T = TypeVar("T")


async def wait_at_most(task: asyncio.Future[T], seconds: float) -> T:
    """``task``'s result, or TimeoutError once ``seconds`` have passed. The task is then cancelled
    but not waited for: a query cancelled on a database that stopped answering is let go by its
    driver only about a minute later (asyncpg), which asyncio.timeout would wait out. Its outcome
    is retrieved whenever it ends (no "exception was never retrieved")."""
    task.add_done_callback(_retrieve)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    finally:
        if not task.done():
            task.cancel()  # past the deadline, or the caller itself was cancelled
    if not done:
        raise TimeoutError
    return task.result()


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
