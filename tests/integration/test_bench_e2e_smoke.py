"""`make bench`'s end-to-end benchmark (benchmarks/bench_e2e.py) still runs, so it cannot rot.

A smoke run with a tiny N on the suite's Kafka and Postgres: every path (raw aiohttp, the
Authlib loop, the seed's serial loop, the service's burst and wave with a real worker
process each) must refresh every connection, the table must show every row, and no
plain-text token may appear in the run's logs. No timing is asserted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.benchmarks import e2e_package
from tests.support.infra import require_postgres

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[2]
CONNECTIONS = 30


@pytest.fixture(scope="module")
def e2e() -> Iterator[ModuleType]:
    with e2e_package("render", "runner") as package:
        yield package


async def test_every_path_refreshes_every_connection(e2e: ModuleType, kafka_bootstrap: str) -> None:
    paths = e2e.runner.MAIN_PATHS
    options = e2e.runner.Options(
        connections=CONNECTIONS,
        repeats=1,
        only=paths,
        bootstrap=kafka_bootstrap,
        server_url=require_postgres(),
        scan_interval=1.0,
        service_timeout=60.0,
    )

    left_before = worker_leftovers()

    report = await e2e.runner.run(options)

    assert list(report.table.rows) == list(paths)
    for path in paths:
        [run] = report.table.rows[path]
        assert run.refreshed == CONNECTIONS, path
        assert run.seconds > 0, path
    for path in ("burst", "wave"):
        [run] = report.table.rows[path]
        assert len(run.latencies_ms) == CONNECTIONS, path
        assert run.cpu_seconds is not None and run.peak_rss_bytes, path
        # Where the machine's CPU went, part by part (a tiny run is over within a sample or two:
        # its figures may round to nothing, so only their presence is checked here).
        assert set(run.budget) == {"worker", "postgres", "kafka", "sandbox", "bench", "machine"}, path
        assert all(seconds >= 0 for seconds in run.budget.values()), (path, run.budget)
    text = e2e.render.render(report, options)
    for path in paths:
        assert e2e.results.LABELS[path] in text, path
    assert "vs raw limit" in text and "vs Authlib loop" in text
    assert "CPU per refresh (ms)" in text and "| wave |" in text
    assert report.leaks == (0, 0), "a plain-text token in the benchmark's logs"
    assert worker_leftovers() == left_before, "a worker kept its Faust data or spool outside the run's directory"


def worker_leftovers() -> set[Path]:
    """Faust data directories of benchmark workers and token spools in the repository root and
    the current directory (the run's own directory, under .local/, is the only place for them)."""
    return {
        path
        for folder in {REPO, Path.cwd()}
        for pattern in ("token-refresh-bench-*-data", "token_refresh_spool")
        for path in folder.glob(pattern)
    }
