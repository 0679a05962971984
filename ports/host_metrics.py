"""How busy the machine is, for the metrics the node reports to the server."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from attrs import frozen


@frozen
class HostSample:
    """One reading, under the names of the server's gauges (``node_metrics_update``)."""

    cpu_percent: float  # over the time since the previous reading
    memory_percent: float
    cpu_count: int
    memory_total: int  # bytes
    memory_available: int  # bytes
    os: str  # e.g. "Linux"
    platform: str  # e.g. "Linux-6.1.0-x86_64-with-glibc2.36"


@runtime_checkable
class HostMetrics(Protocol):
    """Never raises: what cannot be read is reported as 0."""

    async def sample(self) -> HostSample: ...
