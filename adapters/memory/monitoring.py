"""NodeMetrics and a monitoring server kept in memory, for tests."""
from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

from v6node.domain.run_events import RunEvent
from v6node.ports.monitoring_server import Health, MonitoringServer
from v6node.ports.node_metrics import NodeMetrics


class MemoryNodeMetrics(NodeMetrics):
    def __init__(self) -> None:
        self.events: list[RunEvent] = []
        self.counts: Counter[str] = Counter()
        self.gauges: dict[str, int] = {}

    def observe(self, event: RunEvent) -> None:
        self.events.append(event)

    def reconnected(self) -> None:
        self.counts["reconnects"] += 1

    def server_call(self, seconds: float, failed: bool) -> None:
        self.counts["calls"] += 1
        self.counts["failures"] += failed

    def set_gauges(self, queue_depth: int, journal_size: int) -> None:
        self.gauges = {"queue_depth": queue_depth, "journal_size": journal_size}

    def exposition(self) -> tuple[bytes, str]:
        lines = [f"{name} {value}" for name, value in sorted({**self.counts, **self.gauges}.items())]
        return ("\n".join(lines) + "\n").encode(), "text/plain"


class MemoryMonitoringServer(MonitoringServer):
    """Test-side: ``health()`` and ``metrics()`` do what a GET would."""

    def __init__(self) -> None:
        self.running = False
        self._health: Callable[[], Awaitable[Health]] | None = None
        self._refresh: Callable[[], Awaitable[None]] | None = None

    async def start(
        self, host: str, port: int, health: Callable[[], Awaitable[Health]], refresh: Callable[[], Awaitable[None]]
    ) -> int:
        self.running, self._health, self._refresh = True, health, refresh
        return port or 9466

    async def stop(self) -> None:
        self.running = False

    async def health(self) -> Health:
        assert self._health is not None, "not started"
        return await self._health()

    async def refresh(self) -> None:
        assert self._refresh is not None, "not started"
        await self._refresh()
