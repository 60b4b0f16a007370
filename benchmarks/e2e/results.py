"""What one measured run yields, the median of repeats, and the table."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field

MiB = 1024 * 1024


@dataclass
class Measurement:
    """One repeat of one path: N connections refreshed in ``seconds``."""

    path: str
    refreshed: int
    seconds: float
    cpu_seconds: float | None = None  # the process doing the work: this script, or the worker(s)
    peak_rss_bytes: int | None = None
    sandbox_cpu_seconds: float | None = None  # the provider sandbox over the same time
    latencies_ms: list[float] = field(default_factory=list)  # event time -> outcome, per connection
    # CPU seconds of each part of the machine over the run (service rows): worker, postgres, kafka,
    # sandbox, bench, and the whole machine (every process, every core).
    budget: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def rate(self) -> float:
        return self.refreshed / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_share(self) -> float | None:
        return _share_of(self.cpu_seconds, self.seconds)

    @property
    def sandbox_share(self) -> float | None:
        return _share_of(self.sandbox_cpu_seconds, self.seconds)


def _share_of(cpu_seconds: float | None, seconds: float) -> float | None:
    return None if cpu_seconds is None or seconds <= 0 else cpu_seconds / seconds


def median_run(runs: list[Measurement]) -> Measurement:
    """The repeat with the median rate (the lower middle one for an even count): a real run,
    so its seconds, CPU and latencies belong together."""
    ordered = sorted(runs, key=lambda run: run.rate)
    return ordered[(len(ordered) - 1) // 2]


LABELS = {
    "raw": "raw limit: aiohttp alone hammering the sandbox token endpoint (no Kafka, no database)",
    "authlib": "a plain Authlib `AsyncOAuth2Client` refresh loop, semaphore of 100, plain SQL",
    "serial": "the seed's serial loop (read, refresh with httpx, update; one at a time)",
    "burst": "**the service, burst of due `connection.created`**",
    "wave": "**the service, timer-driven wave of stored connections coming due at once**",
}
SERVICE_PATHS = ("burst", "wave")


@dataclass
class Table:
    connections: int
    in_flight: int
    latency_ms: float
    rows: dict[str, list[Measurement]] = field(default_factory=dict)
    extra_lines: list[str] = field(default_factory=list)

    def add(self, run: Measurement) -> None:
        self.rows.setdefault(run.path, []).append(run)

    def median_rate(self, path: str) -> float | None:
        runs = self.rows.get(path)
        return median_run(runs).rate if runs else None

    def render(self) -> str:
        raw, authlib = self.median_rate("raw"), self.median_rate("authlib")
        lines = [
            "| path | refreshes/s | vs raw limit | vs Authlib loop | seconds | each repeat (refreshes/s) "
            "| CPU (% of a core) | sandbox CPU | peak RSS |",
            "|---|---:|---:|---:|---:|---|---:|---:|---:|",
        ]
        for path, runs in self.rows.items():
            run = median_run(runs)
            label = LABELS.get(path, path)
            rate = f"**{run.rate:,.0f}**" if path in SERVICE_PATHS else f"{run.rate:,.0f}"
            lines.append(
                f"| {label} | {rate} | {_ratio(run.rate, raw)} | {_ratio(run.rate, authlib)} | {run.seconds:.2f} "
                f"| {', '.join(f'{r.rate:,.0f}' for r in runs)} | {_pct(run.cpu_share)} | {_pct(run.sandbox_share)} "
                f"| {_mib(run.peak_rss_bytes)} |"
            )
        return "\n".join([*lines, *budget_table(self.rows, os.cpu_count() or 1), *self.extra_lines])


BUDGET_PARTS = ("worker", "postgres", "kafka", "sandbox", "bench")


def budget_table(rows: dict[str, list[Measurement]], cores: int) -> list[str]:
    """CPU per refresh of every part of the machine, for the service rows (median repeat): where
    the machine's CPU goes, and the most refreshes/s that CPU per refresh allows on ``cores``."""
    measured = [(path, median_run(runs)) for path, runs in rows.items() if path in SERVICE_PATHS]
    measured = [(path, run) for path, run in measured if run.budget and run.refreshed]
    if not measured:
        return []
    lines = [
        "",
        f"CPU per refresh (ms), median repeat, every process of the machine ({cores} cores):",
        "",
        "| path | " + " | ".join(BUDGET_PARTS) + " | other | machine | machine busy | at most (all cores busy) |",
        "|---|" + "---:|" * (len(BUDGET_PARTS) + 4),
    ]
    for path, run in measured:
        per = {part: run.budget.get(part, 0.0) * 1000 / run.refreshed for part in BUDGET_PARTS}
        machine = run.budget.get("machine", 0.0) * 1000 / run.refreshed
        other = max(0.0, machine - sum(per.values()))
        busy = run.budget.get("machine", 0.0) / (run.seconds * cores) if run.seconds > 0 else 0.0
        ceiling = cores * 1000 / machine if machine > 0 else float("nan")
        lines.append(
            f"| {path} | "
            + " | ".join(f"{per[part]:.2f}" for part in BUDGET_PARTS)
            + f" | {other:.2f} | {machine:.2f} | {busy * 100:.0f}% | {ceiling:,.0f}/s |"
        )
    return lines


def _ratio(rate: float, reference: float | None) -> str:
    return "n/a" if not reference else f"{rate / reference:.2f}"


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{share * 100:.0f}%"


def _mib(value: int | None) -> str:
    return "n/a" if not value else f"{value / MiB:.0f} MiB"


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def latency_summary(run: Measurement) -> str:
    values = run.latencies_ms
    if not values:
        return "no latencies"
    return (
        f"p50 {percentile(values, 0.5):,.0f} ms, p99 {percentile(values, 0.99):,.0f} ms, "
        f"max {max(values):,.0f} ms, mean {statistics.fmean(values):,.0f} ms"
    )
