"""The benchmark's CPU budget: what each part of the machine spent over a run, per refresh."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.support.benchmarks import e2e_package


@pytest.fixture(scope="module")
def e2e() -> Iterator[ModuleType]:
    with e2e_package("procstat", "results") as package:
        yield package


def test_a_part_keeps_what_an_exited_process_used_and_counts_a_new_one_from_birth(
    e2e: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    procstat = e2e.procstat
    cpu = {1: 10.0, 2: 50.0}  # pid -> CPU seconds since it started
    alive = {1, 2}
    monkeypatch.setattr(procstat, "usage", lambda pid: procstat.Usage(cpu[pid], 0, 0) if pid in alive else None)
    machine = iter([100.0, 101.0, 102.0, 103.0])
    monkeypatch.setattr(procstat, "machine_busy_seconds", lambda: next(machine))
    clock = iter([1.0, 2.0, 3.0, 4.0])
    monkeypatch.setattr(procstat.time, "time", lambda: next(clock))
    sampler = procstat.BudgetSampler({"postgres": lambda: sorted(alive)})

    sampler.sample()  # t=1: 1 and 2 counted from now (what they used before is not this run's)
    cpu[1], cpu[2] = 10.5, 50.25
    sampler.sample()  # t=2: +0.75
    alive.discard(2)  # 2 exits with 50.5 used (the last 0.25 never seen)
    cpu[1], cpu[3] = 11.0, 0.5
    alive.add(3)  # 3 born since: all of its 0.5 counted
    sampler.sample()  # t=3: +0.5 +0.5
    sampler.sample()  # t=4: nothing more

    assert sampler.between(1.0, 4.0) == {"postgres": 1.75, "machine": 3.0}
    assert sampler.between(1.5, 2.5) == pytest.approx({"postgres": 0.375 + 0.5, "machine": 1.0})


def test_the_budget_table_gives_cpu_per_refresh_and_the_ceiling_it_allows(e2e: ModuleType) -> None:
    results = e2e.results
    run = results.Measurement(
        "wave",
        refreshed=1000,
        seconds=2.0,
        budget={"worker": 1.0, "postgres": 0.5, "kafka": 0.25, "sandbox": 0.2, "bench": 0.05, "machine": 3.5},
    )
    lines = results.budget_table({"raw": [results.Measurement("raw", 10, 1.0)], "wave": [run]}, cores=2)
    assert "| wave | 1.00 | 0.50 | 0.25 | 0.20 | 0.05 | 1.50 | 3.50 | 88% | 571/s |" in lines
    assert not [line for line in lines if line.startswith("| raw")]
