"""CPU time and memory of a process, read from /proc (no psutil)."""

from __future__ import annotations

import os
from dataclasses import dataclass
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
