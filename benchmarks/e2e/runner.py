"""One benchmark run: provision, the chosen parts with their repeats, the tables, clean up."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from . import baselines, extras, leaks, plots, rows
from .borrowed import REPO
from .environment import Environment, Grant, log_paths
from .results import Measurement, Table, latency_summary, median_run
from .service import ServiceOptions, service_run

MAIN_PATHS = ("raw", "authlib", "serial", "burst", "wave")
PATHS = (*MAIN_PATHS, "scaling", "inflight", "plots", "api", "scan")


@dataclass
class Options:
    connections: int = 3000
    repeats: int = 3
    in_flight: int = 100
    latency_ms: float = 20.0
    only: tuple[str, ...] = PATHS
    bootstrap: str | None = None  # None: the run starts its own broker
    kafka_port: int = 29092
    server_url: str | None = None  # None: scripts/postgres_local.py start
    sandbox_port: int = 0
    scan_interval: float = 5.0
    max_in_flight: int | None = None
    scaling_workers: tuple[int, ...] = (1, 2, 4)
    scaling_partitions: int = 8
    inflight_sweep: tuple[int, ...] = (25, 100, 400)
    sweep_repeats: int = 1
    api_calls: int = 2000
    scan_rows: int = 1_000_000
    scan_backlog: int = 50_000
    code: str | None = None  # None: the workers run this checkout's working tree
    service_timeout: float | None = None
    plots_dir: Path = REPO / "docs"
    keep: bool = False


def say(message: str) -> None:
    sys.stderr.write(f"bench {datetime.now().strftime('%H:%M:%S')} {message}\n")
    sys.stderr.flush()


@dataclass
class Report:
    table: Table
    scaling: list[Measurement] = field(default_factory=list)
    sweep: dict[str, dict[int, list[Measurement]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    leaks: tuple[int, int] = (0, 0)
    seconds: float = 0.0


class Run:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.environment = Environment(
            bootstrap=options.bootstrap,
            kafka_port=options.kafka_port,
            server_url=options.server_url,
            sandbox_port=options.sandbox_port,
            latency=options.latency_ms / 1000,
            keep=options.keep,
        )
        self.report = Report(Table(options.connections, options.in_flight, options.latency_ms))
        self.grants: list[Grant] = []

    def wants(self, part: str) -> bool:
        return part in self.options.only

    def service_options(self, **overrides: object) -> ServiceOptions:
        values: dict[str, object] = {
            "scan_interval": self.options.scan_interval,
            "max_in_flight": self.options.max_in_flight,
            "platform_concurrency": self.options.in_flight,
            "code": self.options.code,
            "timeout": self.options.service_timeout,
        }
        return ServiceOptions(**(values | overrides))  # type: ignore[arg-type]

    async def measure(
        self, path: str, *, in_flight: int | None = None, service: ServiceOptions | None = None
    ) -> Measurement:
        """One repeat of one path, with the sandbox's CPU over the same call."""
        environment, flight = self.environment, in_flight or self.options.in_flight
        sandbox_before = environment.sandbox_cpu()
        if path == "raw":
            result = await baselines.raw(environment, self.grants, flight)
        elif path in ("authlib", "serial"):
            await rows.empty(environment.database_url)
            await rows.seed_due(environment.database_url, environment.cipher, rows.connections_for(self.grants))
            if path == "authlib":
                result = await baselines.authlib_loop(environment, flight)
            else:
                result = await baselines.serial_loop(environment)
        else:
            connections = rows.connections_for(self.grants)
            result = await service_run(environment, path, connections, service or self.service_options())
        result.sandbox_cpu_seconds = environment.sandbox_cpu() - sandbox_before
        say(f"{path}: {result.refreshed} in {result.seconds:.2f}s = {result.rate:,.0f}/s {result.note}".rstrip())
        return result

    async def main_rows(self) -> None:
        table = self.report.table
        paths = [path for path in MAIN_PATHS if self.wants(path)]
        for repeat in range(1, self.options.repeats + 1):
            if paths:
                say(f"repeat {repeat}/{self.options.repeats}")
            for path in paths:
                table.add(await self.measure(path))
        for path in ("burst", "wave"):
            if table.rows.get(path):
                table.extra_lines.append(
                    f"\n{path} latency, event to token.refreshed (median repeat): "
                    f"{latency_summary(median_run(table.rows[path]))}"
                )

    async def scaling(self) -> None:
        """The wave with 1, 2, 4 workers on topics of 8 partitions."""
        for workers in self.options.scaling_workers:
            service = self.service_options(workers=workers, partitions=self.options.scaling_partitions)
            runs = [await self.measure("wave", service=service) for _ in range(self.options.sweep_repeats)]
            self.report.scaling.append(median_run(runs))

    async def inflight_sweep(self) -> None:
        """Raw aiohttp and the wave at each in-flight value (the service: MAX_REFRESHES_IN_FLIGHT
        and PLATFORM_MAX_CONCURRENCY both set to it)."""
        sweep: dict[str, dict[int, list[Measurement]]] = {"raw aiohttp": {}, "service, wave": {}}
        for value in self.options.inflight_sweep:
            for _ in range(self.options.sweep_repeats):
                sweep["raw aiohttp"].setdefault(value, []).append(await self.measure("raw", in_flight=value))
                service = self.service_options(max_in_flight=value, platform_concurrency=value)
                sweep["service, wave"].setdefault(value, []).append(await self.measure("wave", service=service))
        self.report.sweep = sweep

    def draw(self) -> None:
        directory = self.options.plots_dir
        directory.mkdir(parents=True, exist_ok=True)
        options = self.options
        setting = f"{options.connections:,} connections, endpoint {options.latency_ms:g} ms"
        if self.report.sweep:
            self.report.plots.append(
                plots.throughput_vs_in_flight(
                    self.report.sweep, directory / "benchmarks-inflight.png", f"Throughput vs in flight\n{setting}"
                )
            )
        table = self.report.table
        runs = {path: median_run(table.rows[path]) for path in ("burst", "wave") if table.rows.get(path)}
        if runs:
            title = f"Service refresh latency, event to token.refreshed\n{setting}, {options.in_flight} in flight"
            self.report.plots.append(plots.latency_cdf(runs, directory / "benchmarks-latency-cdf.png", title))

    async def api(self) -> None:
        measure_api = extras.find("bench_api", "measure_api")
        if measure_api is None:
            self.report.notes.append("\nAPI row: benchmarks/bench_api.py has no measure_api yet; not measured.")
            return
        await rows.empty(self.environment.database_url)
        result = await measure_api(self.environment.database_url, self.environment.key, calls=self.options.api_calls)
        self.report.notes += extras.api_lines(result, self.options.api_calls, 100)

    async def scan(self) -> None:
        measure_scan = extras.find("bench_scan", "measure_scan")
        if measure_scan is None:
            self.report.notes.append("\nScan row: benchmarks/bench_scan.py has no measure_scan yet; not measured.")
            return
        options = self.options
        result = await measure_scan(
            self.environment.server_url,
            self.environment.bootstrap,
            rows=options.scan_rows,
            backlog=options.scan_backlog,
        )
        self.report.notes += extras.scan_lines(result, options.scan_rows, options.scan_backlog)

    async def run(self) -> Report:
        began = time.monotonic()
        environment = self.environment
        try:
            say(f"run {environment.run_id}: logs in {environment.workdir}")
            await environment.start()
            say(
                f"Kafka {environment.bootstrap}, database {environment.database}, "
                f"sandbox {environment.sandbox.base_url}"
            )
            self.grants = await environment.make_grants(self.options.connections)
            await self.main_rows()
            if self.wants("scaling"):
                await self.scaling()
            if self.wants("inflight"):
                await self.inflight_sweep()
            if self.wants("plots"):
                self.draw()
            if self.wants("api"):
                await self.api()
            if self.wants("scan"):
                await self.scan()
            issued = await environment.issued_tokens()
            self.report.leaks = leaks.token_strings_in(log_paths(environment.workdir), issued)
        finally:
            await environment.stop()
        self.report.seconds = time.monotonic() - began
        return self.report


async def run(options: Options) -> Report:
    return await Run(options).run()
