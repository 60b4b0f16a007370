"""Rows measured by other benchmarks' functions, run inside this run when they exist:
``bench_api.measure_api`` (get_valid_access_token under load) and ``bench_scan.measure_scan``
(the expiry scan over a large table). Missing ones are reported as such, not guessed."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parents[1]


def find(module: str, function: str) -> Callable[..., Awaitable[dict[str, Any]]] | None:
    """``benchmarks/<module>.py``'s async ``function``, or None when it is not there (yet)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    try:
        loaded = importlib.import_module(module)
    except ImportError:
        return None
    candidate = getattr(loaded, function, None)
    return candidate if inspect.iscoroutinefunction(candidate) else None


def api_lines(result: dict[str, Any], calls: int, concurrency: int) -> list[str]:
    return [
        "",
        f"API `get_valid_access_token`, tokens fresh, {calls:,} calls, {concurrency} concurrent callers, one process "
        f"(benchmarks/bench_api.py): p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
        f"{result['calls_per_second']:,.0f} calls/s",
    ]


def scan_lines(result: dict[str, Any], rows: int, backlog: int) -> list[str]:
    lines = [
        "",
        f"Expiry scan of {rows:,} connections with {backlog:,} due (benchmarks/bench_scan.py): "
        f"{result['rows_per_second']:,.0f} rows/s requested through the real broker; "
        f"index plan: {'yes' if result.get('index_plan') else 'NO'}",
    ]
    memory = {key: value for key, value in result.items() if "rss" in key}
    if memory:
        lines.append(
            "scan process memory: " + ", ".join(f"{key} {_amount(key, value)}" for key, value in memory.items())
        )
    plan = result.get("plan")
    if plan:
        lines += ["", "```", str(plan).strip(), "```"]
    return lines


def _amount(key: str, value: Any) -> str:
    if isinstance(value, int | float) and "_mb" in key:
        return f"{value:,.0f} MB"
    if isinstance(value, int | float) and value > 1024 * 1024:
        return f"{value / (1024 * 1024):,.0f} MiB"
    return str(value)
