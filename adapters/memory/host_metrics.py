"""Host metrics with values a test chooses."""
from __future__ import annotations

from v6node.ports.host_metrics import HostMetrics, HostSample


class MemoryHostMetrics(HostMetrics):
    def __init__(self, sample: HostSample | None = None) -> None:
        self.reading = sample or HostSample(
            cpu_percent=12.5, memory_percent=40.0, cpu_count=2, memory_total=8 * 2**30,
            memory_available=5 * 2**30, os="Linux", platform="Linux-memory",
        )
        self.samples = 0

    async def sample(self) -> HostSample:
        self.samples += 1
        return self.reading
