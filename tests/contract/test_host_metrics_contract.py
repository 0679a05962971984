"""HostMetrics: /proc and the memory twin give readings in the same ranges."""
from __future__ import annotations

from pathlib import Path

import pytest

from v6node.adapters.memory.host_metrics import MemoryHostMetrics
from v6node.adapters.system.proc_host_metrics import ProcHostMetrics
from v6node.ports.host_metrics import HostMetrics


@pytest.fixture(params=["memory", "proc"])
def host(request: pytest.FixtureRequest) -> HostMetrics:
    return MemoryHostMetrics() if request.param == "memory" else ProcHostMetrics()


async def test_readings_are_in_range(host: HostMetrics) -> None:
    assert isinstance(host, HostMetrics)
    for _ in range(2):
        sample = await host.sample()
        assert 0 <= sample.cpu_percent <= 100 and 0 <= sample.memory_percent <= 100
        assert sample.cpu_count >= 1 and sample.memory_total >= sample.memory_available > 0
        assert sample.os and sample.platform


async def test_what_cannot_be_read_is_zero_not_an_error(tmp_path: Path) -> None:
    sample = await ProcHostMetrics(proc=str(tmp_path)).sample()
    assert (sample.cpu_percent, sample.memory_total, sample.memory_percent) == (0.0, 0, 0.0)
