"""The worker's event loop is the one EVENT_LOOP names."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import uvloop

from stream_app.cli import use_event_loop
from stream_app.settings import load_settings


@pytest.fixture
def restored_policy() -> Iterator[None]:
    before = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(before)


def test_uvloop_is_the_default(encryption_key: str) -> None:
    assert load_settings(encryption_key=encryption_key).event_loop == "uvloop"


@pytest.mark.usefixtures("restored_policy")
def test_the_worker_runs_its_loop_on_uvloop() -> None:
    use_event_loop("uvloop")
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


@pytest.mark.usefixtures("restored_policy")
def test_asyncio_keeps_asyncios_own_loop() -> None:
    asyncio.set_event_loop_policy(None)  # the default policy, as a new process has
    use_event_loop("asyncio")
    loop = asyncio.new_event_loop()
    try:
        assert not isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_an_unknown_loop_is_refused_naming_the_setting(encryption_key: str) -> None:
    with pytest.raises(Exception, match="EVENT_LOOP"):
        load_settings(encryption_key=encryption_key, event_loop="trio")
