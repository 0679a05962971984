"""NodeMetrics that keep nothing: for a node whose local endpoint is off, where no one reads them."""
from __future__ import annotations

from v6node.domain.run_events import RunEvent
from v6node.ports.node_metrics import NodeMetrics


class NoNodeMetrics(NodeMetrics):
    """Every observation is dropped; the exposition is empty."""

    def observe(self, event: RunEvent) -> None:
        pass

    def reconnected(self) -> None:
        pass

    def server_call(self, seconds: float, failed: bool) -> None:
        pass

    def set_gauges(self, queue_depth: int, journal_size: int) -> None:
        pass

    def exposition(self) -> tuple[bytes, str]:
        return b"", "text/plain; version=0.0.4; charset=utf-8"
