"""CPU time and memory of a process, read from /proc (no psutil)."""

from __future__ import annotations

import asyncio
import bisect
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float  # user + system, since the process started
    rss_bytes: int  # now
    peak_rss_bytes: int  # high-water mark (VmHWM)


def usage(pid: int) -> Usage | None:
    """None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces) start at index 2 (state).
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    memory = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            memory[name] = int(value.split()[0]) * 1024
    return Usage((utime + stime) / _TICKS, memory.get("VmRSS", 0), memory.get("VmHWM", 0))


def total_cpu(pids: list[int]) -> float:
    return sum(u.cpu_seconds for u in (usage(pid) for pid in pids) if u is not None)


def peak_rss(pids: list[int]) -> int:
    """The largest high-water mark among ``pids`` (per process, not summed)."""
    return max((u.peak_rss_bytes for u in (usage(pid) for pid in pids) if u is not None), default=0)


@dataclass
class CpuSampler:
    """Samples the processes' total CPU time every ``interval`` seconds, so that the CPU used
    between two moments known only afterwards (record timestamps) can be read off."""

    pids: list[int]
    interval: float = 0.1
    samples: list[tuple[float, float]] = field(default_factory=list)  # (wall clock, CPU seconds)

    async def run(self) -> None:
        while True:
            self.samples.append((time.time(), total_cpu(self.pids)))
            await asyncio.sleep(self.interval)

    def between(self, start: float, end: float) -> float | None:
        """CPU seconds used from ``start`` to ``end`` (wall clock), to within one interval."""
        if len(self.samples) < 2:
            return None
        return self._at(end) - self._at(start)

    def _at(self, moment: float) -> float:
        times = [sample[0] for sample in self.samples]
        index = min(max(bisect.bisect_right(times, moment), 1), len(times) - 1)
        (t0, c0), (t1, c1) = self.samples[index - 1], self.samples[index]
        if moment <= t0 or t1 <= t0:
            return c0
        return c0 + (c1 - c0) * min(1.0, (moment - t0) / (t1 - t0))


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy (not idle, not waiting) since boot."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def pids_where(match: Callable[[str, str], bool]) -> list[int]:
    """The processes whose (command name, command line) ``match`` says yes to."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if match(comm, cmdline):
            found.append(int(entry.name))
    return found


Pids = Callable[[], list[int]]


@dataclass
class BudgetSampler:
    """Samples the CPU of groups of processes (found again at each sample: database backends
    come and go) and of the whole machine, so the CPU each part spent between two moments known
    only afterwards can be read off. A group's total only grows: what a process used is kept
    when it exits."""

    groups: dict[str, Pids]
    interval: float = 0.25
    samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    _last: dict[int, float] = field(default_factory=dict)
    _totals: dict[str, float] = field(default_factory=dict)

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def sample(self) -> None:
        for group, pids in self.groups.items():
            for pid in pids():
                used = usage(pid)
                if used is None:
                    continue
                # First seen at the first sample: counted from now; later: born since, all of it.
                before = self._last.get(pid, 0.0 if self.samples else used.cpu_seconds)
                self._last[pid] = used.cpu_seconds
                self._totals[group] = self._totals.get(group, 0.0) + max(0.0, used.cpu_seconds - before)
        self.samples.append((time.time(), {**self._totals, "machine": machine_busy_seconds()}))

    def between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds of each group (and ``machine``) from ``start`` to ``end``, to within one interval."""
        if len(self.samples) < 2:
            return {}
        first, last = self._at(start), self._at(end)
        return {name: last.get(name, 0.0) - first.get(name, 0.0) for name in last}

    def _at(self, moment: float) -> dict[str, float]:
        """Each total at ``moment``, interpolated between the samples around it."""
        times = [sample[0] for sample in self.samples]
        index = min(max(bisect.bisect_right(times, moment), 1), len(times) - 1)
        (t0, before), (t1, after) = self.samples[index - 1], self.samples[index]
        share = 0.0 if t1 <= t0 else min(1.0, max(0.0, (moment - t0) / (t1 - t0)))
        return {name: before.get(name, 0.0) + (value - before.get(name, 0.0)) * share for name, value in after.items()}
