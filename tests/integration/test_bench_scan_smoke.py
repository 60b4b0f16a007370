"""benchmarks/bench_scan.py still runs (``make bench`` calls its ``measure_scan``): a tiny table
on the suite's Kafka and Postgres, every due row requested through the broker (the benchmark
fails otherwise), its plan and memory reported. No timing is asserted."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.infra import require_postgres

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench_scan() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("bench_scan")
    finally:
        sys.path.remove(str(BENCHMARKS))


async def test_measure_scan_requests_the_whole_backlog(bench_scan: ModuleType, kafka_bootstrap: str) -> None:
    result = await bench_scan.measure_scan(require_postgres(), kafka_bootstrap, rows=3000, backlog=700)

    assert result["rows"] == 3000 and result["backlog"] == 700
    assert result["rows_per_second"] > 0 and result["seconds"] > 0
    assert isinstance(result["index_plan"], bool)
    assert bench_scan.SCAN_INDEX in result["plan"] or "Seq Scan" in result["plan"]
    assert "FOR UPDATE" not in result["plan"]  # the plan's text, not the statement's
    assert 0 < result["rss_mb_before"] <= result["rss_mb_after"] + 64
