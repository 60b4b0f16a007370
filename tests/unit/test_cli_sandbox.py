"""``token-refresh sandbox --quiet``: the sandbox without its access-log line per request, as
``python -m stream_app.sandbox --quiet`` runs it."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

import stream_app.sandbox
from stream_app.cli import cli


@pytest.mark.parametrize(("flags", "access_log"), [([], True), (["--quiet"], False)])
def test_the_quiet_flag_reaches_serve(monkeypatch: pytest.MonkeyPatch, flags: list[str], access_log: bool) -> None:
    served: list[dict[str, Any]] = []

    async def fake_serve(host: str, port: int, **options: Any) -> None:
        options.pop("ready")
        served.append({"host": host, "port": port, **options})

    monkeypatch.setattr(stream_app.sandbox, "serve", fake_serve)

    result = CliRunner().invoke(cli, ["sandbox", "--port", "18123", *flags])

    assert result.exit_code == 0, result.output
    assert served == [{"host": "127.0.0.1", "port": 18123, "access_log": access_log}]
