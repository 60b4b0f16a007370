"""The chaos run gives each worker a token spool of its own, as each has on its own machine in
production, and the same one across that worker's restarts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from chaoskit import run  # scripts/ is not a package


class NoPostgres:
    """No cluster is looked for (the real one needs PostgreSQL installed)."""

    def __init__(self, port: int) -> None:
        self.port = port


def test_each_worker_has_its_own_spool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "Postgres", NoPostgres)
    chaos = run.ChaosRun(
        run.Options(
            connections=10,
            minutes=1,
            lifetime=60,
            buffer=30,
            down="discord",
            throttle="spotify",
            keep=False,
            kafka_port=19092,
            postgres_port=15432,
            sandbox_port=18099,
            metrics_ports=(19101, 19102),
        )
    )

    first, second = (Path(chaos.worker_env(f"worker-{n}", 19100 + n)["TOKEN_SPOOL_DIR"]) for n in (1, 2))

    assert first != second
    assert chaos.workdir in first.parents and chaos.workdir in second.parents
    assert Path(chaos.worker_env("worker-1", 19101)["TOKEN_SPOOL_DIR"]) == first
