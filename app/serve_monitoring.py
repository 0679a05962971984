"""Use case: open the node's local /health and /metrics endpoint (``monitoring.enabled``)."""
from __future__ import annotations

from v6node.app.check_health import CheckHealth
from v6node.app.run_queue import RunQueue
from v6node.domain.config import NodeConfig
from v6node.ports.monitoring_server import MonitoringServer
from v6node.ports.node_metrics import NodeMetrics
from v6node.ports.run_journal import RunJournal


class ServeMonitoring:
    """Start the endpoint on ``monitoring.host`` (loopback unless configured) and port.

    Business rules: off unless ``monitoring.enabled``; ``/health`` is ``CheckHealth``;
    ``/metrics`` is read fresh: the queue depth and the journal's size are set just
    before each scrape. A port that is taken stops the node (the operator asked for it).
    """

    def __init__(
        self,
        config: NodeConfig,
        server: MonitoringServer,
        check_health: CheckHealth,
        metrics: NodeMetrics,
        queue: RunQueue,
        journal: RunJournal,
    ) -> None:
        self.config = config
        self.server = server
        self.check_health = check_health
        self.metrics = metrics
        self.queue = queue
        self.journal = journal

    async def __call__(self) -> int | None:
        settings = self.config.monitoring
        if not settings.endpoint:
            return None
        return await self.server.start(settings.endpoint_host, settings.endpoint_port, self.check_health, self._refresh)

    async def _refresh(self) -> None:
        self.metrics.set_gauges(len(self.queue.held()), await self.journal.count())
