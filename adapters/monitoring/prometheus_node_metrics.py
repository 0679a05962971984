"""NodeMetrics in a Prometheus registry of the node's own (prometheus-client)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from v6node.domain.run_events import RunEvent, Stage
from v6node.ports.node_metrics import NodeMetrics

_RUN_SECONDS = (0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


class PrometheusNodeMetrics(NodeMetrics):
    """Counters and gauges under ``v6node_``; the duration of a run counts from its receipt."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.received = Counter("v6node_runs_received", "Runs this node took", registry=registry)
        self.started = Counter("v6node_runs_started", "Algorithm containers started (or re-attached)", registry=registry)
        self.finished = Counter("v6node_runs_finished", "Runs reported, by status", ["status"], registry=registry)
        self.duration = Histogram(
            "v6node_run_duration_seconds", "From receipt to report", buckets=_RUN_SECONDS, registry=registry
        )
        self.queue = Gauge("v6node_queue_depth", "Runs held by this process (queued or executing)", registry=registry)
        self.journal = Gauge("v6node_journal_entries", "Entries in the run journal", registry=registry)
        self.reconnects = Counter("v6node_websocket_reconnects", "Reconnects of the websocket", registry=registry)
        self.calls = Histogram("v6node_server_request_seconds", "REST calls to the server", registry=registry)
        self.failures = Counter("v6node_server_request_failures", "REST calls without an answer", registry=registry)
        self._received_at: dict[int, float] = {}

    def observe(self, event: RunEvent) -> None:
        if event.stage is Stage.RECEIVED:
            self.received.inc()
            self._received_at.setdefault(event.run_id, event.at.timestamp())
        elif event.stage is Stage.STARTED:
            self.started.inc()
        elif event.stage is Stage.FINISHED:
            self.finished.labels(status=str(event.status)).inc()
            since = self._received_at.pop(event.run_id, None)
            if since is not None:
                self.duration.observe(max(event.at.timestamp() - since, 0.0))

    def reconnected(self) -> None:
        self.reconnects.inc()

    def server_call(self, seconds: float, failed: bool) -> None:
        self.calls.observe(seconds)
        if failed:
            self.failures.inc()

    def set_gauges(self, queue_depth: int, journal_size: int) -> None:
        self.queue.set(queue_depth)
        self.journal.set(journal_size)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
