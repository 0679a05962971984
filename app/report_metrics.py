"""Use case: tell the server how busy this node's machine is (``node_metrics_update``)."""
from __future__ import annotations

from attrs import asdict

from v6node.app.active_runs import ActiveRuns
from v6node.app.emitter import Emitter
from v6node.ports.host_metrics import HostMetrics


class ReportMetrics:
    """Send one reading under the names of the server's Prometheus gauges.

    Business rules (``prometheus.enabled``; the node's loop calls this every
    ``prometheus.report_interval_seconds``):
    - ``cpu_percent``, ``memory_percent``, ``cpu_count``, ``memory_total``,
      ``memory_available`` of the machine, ``num_algorithm_containers`` running here, and
      the ``os`` and ``platform`` labels, which the server takes off as labels;
    - no GPU metrics (the reference's come from NVML; a node without NVML sends none, which
      the server accepts);
    - a reading that cannot be sent while the websocket is down is dropped: the next one
      follows ``report_interval_seconds`` later.
    """

    def __init__(self, host: HostMetrics, active: ActiveRuns, emitter: Emitter) -> None:
        self.host = host
        self.active = active
        self.emitter = emitter

    async def __call__(self) -> dict[str, object]:
        payload: dict[str, object] = {**asdict(await self.host.sample()), "num_algorithm_containers": len(self.active)}
        await self.emitter.emit("node_metrics_update", payload)
        return payload
