"""The HTTP transport benchmark (benchmarks/bench_http_transports.py) still runs, and the
service's HTTP client is the httpx-over-aiohttp one that the benchmark shows holding up.

A smoke test: a tiny load, every client must get every answer; no timing is asserted."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from httpx_aiohttp import AiohttpTransport

from stream_app.providers.transport import build_http_transport

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_http_transports.py"
REQUESTS = 20


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    """The script loaded from its file (``benchmarks/`` is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_http_transports", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_every_client_gets_every_answer(bench: ModuleType) -> None:
    workload = bench.Workload(concurrency=5, requests=REQUESTS, seconds=60, warmup_requests=5, timeout=10)

    results = bench.run_benchmark(workload, latency=0.001)

    assert [result.name for result in results] == list(bench.CLIENT_NAMES)
    for result in results:
        assert result.errors == 0, (result.name, result.error_kinds)
        assert result.ok == REQUESTS, result.name
        assert result.stopped_by == "requests", result.name
        assert result.requests_per_second > 0, result.name
        assert 0 < result.server_peak_in_flight <= workload.concurrency, result.name
        assert result.vs_baseline is not None and result.vs_aiohttp is not None
    by_name = {result.name: result for result in results}
    assert by_name["httpx"].vs_baseline == pytest.approx(1.0)
    assert by_name["aiohttp"].vs_aiohttp == pytest.approx(1.0)
    # The benchmark's own evidence of which pool carried each client's requests.
    assert not by_name["httpx"].aiohttp_pool
    assert not by_name["httpx-limits"].aiohttp_pool
    for name in ("httpx-aiohttp", "service"):
        assert by_name[name].aiohttp_pool, name
        assert by_name[name].transport == "httpx_aiohttp.transport.AiohttpTransport", name


def test_the_report_renders(bench: ModuleType) -> None:
    result = bench.ClientResult(
        name="service",
        description="",
        transport="httpx_aiohttp.transport.AiohttpTransport",
        aiohttp_pool=True,
        ok=3,
        requests=3,
        requests_per_second=1.5,
        per_second=[1, 1, 1],
    )
    environment = {
        "machine": "test",
        "python": "3.11",
        "versions": {"httpx": "0"},
        "latency_ms": 1.0,
        "concurrency": 1,
        "requests": 3,
        "seconds": 1.0,
        "rounds": 1,
        "ceiling_rps": 1000.0,
    }

    report = bench.format_report([result], environment, service_ok=True)

    assert "AiohttpTransport (aiohttp pool)" in report
    assert "goes through aiohttp's pool" in report


async def test_the_service_sends_through_aiohttps_pool() -> None:
    transport = build_http_transport()  # httpx's requests and responses...
    try:
        assert isinstance(
            transport.route(httpx.URL("https://accounts.example/token")), AiohttpTransport
        )  # ...over aiohttp
    finally:
        await transport.aclose()
