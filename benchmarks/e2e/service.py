"""The service's two paths, each with fresh worker process(es), topics and consumer group.

- burst: N due ``connection.created`` published to the run's input topic; timed from the
  first publish to the last ``token.refreshed`` (the record's timestamp);
- wave: N due rows seeded in the table before the worker starts; its scan requests them;
  timed from the scan's first ``token.expiring`` to the last ``token.refreshed``.

Refreshed means: a ``token.refreshed`` for the connection was published (the outbox relayed
it), and afterwards the table is checked too (``last_refreshed_at`` set on all N rows).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

from stream_app.clock import utc_now

from . import observe, procstat, rows
from .borrowed import WorkerProcess, publish
from .environment import Environment
from .results import Measurement
from .rows import Connection
from .worker import topic_names, worker_env

_runs = itertools.count(1)


@dataclass(frozen=True)
class ServiceOptions:
    workers: int = 1
    partitions: int = 4
    platform_concurrency: int = 100
    max_in_flight: int | None = None  # None: the service's default
    scan_interval: float = 5.0
    code: str | None = None  # a source tree the workers import the service from (PYTHONPATH)
    timeout: float | None = None  # None: 120 s + 250 ms per connection (today's code needs ~60 ms)


async def service_run(
    environment: Environment, path: str, connections: list[Connection], options: ServiceOptions
) -> Measurement:
    if path not in ("burst", "wave"):
        raise ValueError(path)
    tag = f"{path}-{next(_runs)}"
    topics = topic_names(environment, tag)
    group = f"token-refresh-bench-{environment.run_id}-{tag}"
    await rows.empty(environment.database_url)
    since = utc_now()
    if path == "wave":
        await rows.seed_due(environment.database_url, environment.cipher, connections)
    env = worker_env(
        environment,
        topics,
        group,
        scan_interval=options.scan_interval,
        platform_concurrency=options.platform_concurrency,
        max_in_flight=options.max_in_flight,
        partitions=options.partitions,
        code=options.code,
    )
    workers = [WorkerProcess(env, environment.workdir / f"{tag}.worker-{i}.log") for i in range(1, options.workers + 1)]
    outcomes = observe.Outcomes(
        environment.bootstrap,
        topics["token.refreshed"],
        [topics["token.refresh_failed"]],
        # Outcomes after which a connection is never refreshed: the run has failed already.
        [topics["token.needs_reauth"], f"{topics['connection.created']}.dlq", f"{topics['token.expiring']}.dlq"],
        alive=lambda: all(worker.running for worker in workers),
    )
    timeout = options.timeout or 120 + 0.25 * len(connections)
    sampling: asyncio.Task[None] | None = None
    budgeting: asyncio.Task[None] | None = None
    try:
        for worker in workers:
            worker.start()
        # From the start: with several workers (or a short scan interval) the leader's scan may
        # request the wave before the last worker is ready.
        sampler = procstat.CpuSampler([worker.pid for worker in workers])
        sampling = asyncio.create_task(sampler.run())
        budget = procstat.BudgetSampler(environment.cpu_groups([worker.pid for worker in workers]))
        budgeting = asyncio.create_task(budget.run())
        await asyncio.gather(*(asyncio.to_thread(worker.wait_ready) for worker in workers))
        await outcomes.start()
        if path == "burst":
            events = [rows.created_event(environment.cipher, connection) for connection in connections]
            started = await publish(environment.bootstrap, topics["connection.created"], events)
        done = await outcomes.wait_for({connection.key for connection in connections}, timeout)
        await asyncio.sleep(2 * sampler.interval)  # a sample after the last outcome
        peak = procstat.peak_rss(sampler.pids)
    finally:
        for task in (sampling, budgeting):
            if task is not None:
                task.cancel()
        await outcomes.stop()
        await asyncio.gather(*(asyncio.to_thread(worker.stop) for worker in workers))
    requested = await observe.first_timestamps(
        environment.bootstrap,
        topics["connection.created" if path == "burst" else "token.expiring"],
        expected=len(connections),
    )
    if path == "wave":
        if not requested:
            raise observe.NotAllRefreshed("wave: no token.expiring request was published")
        started = min(requested.values()) / 1000
    ended = max(done.values()) / 1000
    in_table = await rows.refreshed_since(environment.database_url, since)
    if in_table != len(connections):
        raise observe.NotAllRefreshed(f"{path}: {in_table} of {len(connections)} rows have last_refreshed_at set")
    seconds = ended - started
    cpu_seconds = sampler.between(started, ended)
    latencies = [(stamp - requested.get(key, int(started * 1000))) for key, stamp in done.items()]
    return Measurement(
        path,
        len(done),
        seconds,
        cpu_seconds=cpu_seconds,
        peak_rss_bytes=peak,
        latencies_ms=[float(value) for value in latencies],
        budget=budget.between(started, ended),
        note=f"{options.workers} worker(s), {options.partitions} partitions",
    )
