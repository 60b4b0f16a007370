"""An exception inside an agent never silently drops its record (Faust would ack it)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import faust
import pytest

from agents.context import WorkerContext
from stream_app.crypto import generate_key
from stream_app.settings import load_settings


@pytest.fixture
def context() -> WorkerContext:
    settings = load_settings(encryption_key=generate_key())
    return WorkerContext(faust.App("test-context", broker="kafka://127.0.0.1:1"), SimpleNamespace(settings=settings))  # type: ignore[arg-type]


async def test_an_unanticipated_failure_dead_letters_the_record_without_its_message(
    context: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead: list[tuple[Any, str]] = []

    async def dead_letter(record: Any, reason: str) -> None:
        dead.append((record, reason))

    monkeypatch.setattr(context, "dead_letter", dead_letter)
    record = SimpleNamespace(message=SimpleNamespace(topic="token.expiring", partition=0, offset=7))

    async def handle(_record: Any) -> None:
        raise KeyError("sbx_rt_secret_value")

    await context.guarded(record, handle)  # type: ignore[arg-type]
    assert dead == [(record, "processing error: KeyError")]


async def test_cancellation_is_not_a_failure(context: WorkerContext, monkeypatch: pytest.MonkeyPatch) -> None:
    async def dead_letter(record: Any, reason: str) -> None:
        raise AssertionError("a cancelled record must come back, not be dead-lettered")

    monkeypatch.setattr(context, "dead_letter", dead_letter)

    async def handle(_record: Any) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await context.guarded(SimpleNamespace(), handle)  # type: ignore[arg-type]
