"""The PNG plots: throughput against refreshes in flight, and the latency CDF of the service."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from .results import Measurement, median_run


def _pyplot() -> ModuleType:
    """matplotlib is imported only here: it comes with the `bench` extra, not `dev`."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def throughput_vs_in_flight(sweep: dict[str, dict[int, list[Measurement]]], path: Path, title: str) -> Path:
    """``sweep``: series name -> in-flight value -> runs; one line per series (median of runs)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, points in sweep.items():
        xs = sorted(points)
        ys = [median_run(points[x]).rate for x in xs]
        axes.plot(xs, ys, marker="o", label=name)
        for x, y in zip(xs, ys, strict=True):
            axes.annotate(f"{y:,.0f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    axes.set_xscale("log", base=2)
    axes.set_xticks(sorted({x for points in sweep.values() for x in points}))
    axes.get_xaxis().set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
    axes.set_xlabel(
        "refreshes in flight\n(service: MAX_REFRESHES_IN_FLIGHT = PLATFORM_MAX_CONCURRENCY; aiohttp: tasks)"
    )
    axes.set_ylabel("refreshes/s")
    axes.set_ylim(bottom=0)
    return _save(plt, figure, axes, path, title)


def latency_cdf(runs: dict[str, Measurement], path: Path, title: str) -> Path:
    """One curve per run: the share of connections refreshed within x ms of their event."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, run in runs.items():
        values = sorted(run.latencies_ms)
        if not values:
            continue
        shares = [(index + 1) / len(values) for index in range(len(values))]
        axes.step(values, shares, where="post", label=f"{name} ({len(values):,} refreshes)")
    axes.set_xlabel("event to token.refreshed (ms)")
    axes.set_ylabel("share of connections")
    axes.set_ylim(0, 1.02)
    axes.set_xlim(left=0)
    return _save(plt, figure, axes, path, title)


def _save(plt: ModuleType, figure: Any, axes: Any, path: Path, title: str) -> Path:
    """Title, grid and legend, then the PNG written and the figure closed."""
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
