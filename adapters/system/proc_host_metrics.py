"""HostMetrics from /proc (Linux), with no extra dependency."""
from __future__ import annotations

import asyncio
import os
import platform

from v6node.ports.host_metrics import HostMetrics, HostSample


class ProcHostMetrics(HostMetrics):
    """CPU use from /proc/stat between two readings (the first reading covers the time
    since boot), memory from /proc/meminfo."""

    def __init__(self, proc: str = "/proc") -> None:
        self._proc = proc
        self._last: tuple[int, int] | None = None  # (busy, total) jiffies

    async def sample(self) -> HostSample:
        return await asyncio.to_thread(self._sample)

    def _sample(self) -> HostSample:
        total, available = self._memory()
        return HostSample(
            cpu_percent=self._cpu_percent(),
            memory_percent=round(100.0 * (total - available) / total, 1) if total else 0.0,
            cpu_count=os.cpu_count() or 0,
            memory_total=total,
            memory_available=available,
            os=platform.system(),
            platform=platform.platform(),
        )

    def _cpu_percent(self) -> float:
        try:
            with open(f"{self._proc}/stat", encoding="ascii") as stat:
                fields = [int(value) for value in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return 0.0
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy, total = sum(fields) - idle, sum(fields)
        last, self._last = self._last or (0, 0), (busy, total)
        elapsed = total - last[1]
        return round(100.0 * (busy - last[0]) / elapsed, 1) if elapsed > 0 else 0.0

    def _memory(self) -> tuple[int, int]:
        values: dict[str, int] = {}
        try:
            with open(f"{self._proc}/meminfo", encoding="ascii") as meminfo:
                for line in meminfo:
                    name, _, rest = line.partition(":")
                    values[name] = int(rest.split()[0]) * 1024
        except (OSError, ValueError, IndexError):
            return 0, 0
        return values.get("MemTotal", 0), values.get("MemAvailable", 0)
