"""The report as Markdown: the main table, scaling, the in-flight sweep, other rows, the log check."""

from __future__ import annotations

import os
import platform

from .results import MiB, median_run
from .runner import Options, Report


def render(report: Report, options: Options) -> str:
    load = os.getloadavg()
    lines = [
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end",
        f"{options.connections:,} connections, {options.in_flight} requests in flight, endpoint latency "
        f"{options.latency_ms:g} ms, median of {options.repeats} repeat(s); run took {report.seconds:.0f} s"
        if report.table.rows
        else f"run took {report.seconds:.0f} s",
        f"workers run the service from {options.code or 'this working tree'}",
        "",
    ]
    if report.table.rows:
        lines.append(report.table.render())
    lines += _scaling(report, options) + _sweep(report, options) + report.notes
    if report.plots:
        lines += ["", "plots: " + ", ".join(str(path) for path in report.plots)]
    shaped, issued = report.leaks
    lines += ["", f"plain-text tokens in the run's logs: {issued} issued token(s), {shaped} token-shaped string(s)"]
    return "\n".join(lines)


def _scaling(report: Report, options: Options) -> list[str]:
    if not report.scaling:
        return []
    base = report.scaling[0].rate
    raw = report.table.median_rate("raw")
    lines = [
        "",
        f"Scaling, the wave on topics of {options.scaling_partitions} partitions "
        f"({options.sweep_repeats} repeat(s) each, median):",
        "",
        "| workers | refreshes/s | vs 1 worker | vs raw limit | seconds | CPU, all workers (% of a core) "
        "| sandbox CPU | peak RSS (largest worker) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for workers, run in zip(options.scaling_workers, report.scaling, strict=True):
        lines.append(
            f"| {workers} | {run.rate:,.0f} | {run.rate / base:.2f} | "
            f"{'n/a' if not raw else f'{run.rate / raw:.2f}'} | {run.seconds:.2f} | {_pct(run.cpu_share)} "
            f"| {_pct(run.sandbox_share)} | {(run.peak_rss_bytes or 0) / MiB:.0f} MiB |"
        )
    return lines


def _sweep(report: Report, options: Options) -> list[str]:
    if not report.sweep:
        return []
    raw, wave = report.sweep["raw aiohttp"], report.sweep["service, wave"]
    lines = [
        "",
        f"In flight ({options.sweep_repeats} repeat(s) each, median; the service with MAX_REFRESHES_IN_FLIGHT = "
        "PLATFORM_MAX_CONCURRENCY = the value):",
        "",
        "| in flight | raw aiohttp refreshes/s | service wave refreshes/s | wave vs raw | wave p50 / p99 latency |",
        "|---:|---:|---:|---:|---|",
    ]
    for value in options.inflight_sweep:
        raw_rate, run = median_run(raw[value]).rate, median_run(wave[value])
        latencies = sorted(run.latencies_ms)
        p50 = latencies[len(latencies) // 2] if latencies else float("nan")
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else float("nan")
        lines.append(
            f"| {value} | {raw_rate:,.0f} | {run.rate:,.0f} | {run.rate / raw_rate:.2f} | {p50:,.0f} / {p99:,.0f} ms |"
        )
    return lines


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{share * 100:.0f}%"
