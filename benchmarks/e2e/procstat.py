"""CPU time and memory of a process, read from /proc (no psutil)."""

from __future__ import annotations

import asyncio
import bisect
import os
import time
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
