"""``python -m stream_app.sandbox --quiet``: no access-log line per request (a benchmark's or a
chaos run's sandbox answers thousands a second, and formatting each line costs it CPU)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from stream_app.sandbox import __main__ as sandbox_main
from stream_app.sandbox import serve
from tests.support.infra import free_port

ACCESS_LOGGER = "stream_app.sandbox.access"


@pytest.mark.parametrize(("argv", "access_log"), [([], True), (["--quiet"], False)])
def test_the_quiet_flag_turns_the_access_log_off(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], access_log: bool
) -> None:
    served: list[dict[str, Any]] = []

    async def fake_serve(host: str, port: int, **options: Any) -> None:
        served.append({"host": host, "port": port, **options})

    monkeypatch.setattr(sandbox_main, "serve", fake_serve)

    sandbox_main.main(["--port", "18123", *argv])

    assert served == [{"host": "127.0.0.1", "port": 18123, "access_log": access_log}]


@pytest.mark.parametrize("access_log", [True, False])
async def test_a_quiet_sandbox_logs_no_line_per_request(caplog: pytest.LogCaptureFixture, access_log: bool) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve("127.0.0.1", free_port(), access_log=access_log, ready=ready.set_result))
    base_url = await asyncio.wait_for(ready, 5)
    async with httpx.AsyncClient() as client:
        for _ in range(3):
            assert (await client.get(f"{base_url}/_admin/health")).status_code == 200
    task.cancel()  # the server is shut down: every answered request has been logged, or not
    with pytest.raises(asyncio.CancelledError):
        await task

    lines = [record.getMessage() for record in caplog.records if record.name == ACCESS_LOGGER]
    assert len(lines) == (3 if access_log else 0), lines
