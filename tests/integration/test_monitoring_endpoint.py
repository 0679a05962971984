"""The local /health and /metrics endpoint on loopback, with the Prometheus metrics behind it."""
from __future__ import annotations

from datetime import datetime, timezone

import httpx
from prometheus_client.parser import text_string_to_metric_families

from v6node.adapters.monitoring.prometheus_node_metrics import PrometheusNodeMetrics
from v6node.adapters.monitoring.starlette_monitoring_server import StarletteMonitoringServer
from v6node.domain.run_events import RunEvent, Stage
from v6node.domain.status import RunStatus
from v6node.ports.monitoring_server import Health


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_health_answers_200_or_503_with_the_parts_and_metrics_parse() -> None:
    metrics = PrometheusNodeMetrics()
    state = {"health": Health(True, {"server": "logged in"}), "refreshed": 0}

    async def health() -> Health:
        return state["health"]  # type: ignore[return-value]

    async def refresh() -> None:
        state["refreshed"] += 1  # type: ignore[operator]
        metrics.set_gauges(3, 12)

    server = StarletteMonitoringServer(metrics)
    port = await server.start("127.0.0.1", 0, health, refresh)
    try:
        at = datetime(2026, 1, 1, tzinfo=timezone.utc)
        for stage, status in ((Stage.RECEIVED, None), (Stage.STARTED, None), (Stage.FINISHED, RunStatus.COMPLETED)):
            metrics.observe(RunEvent(stage, 7, 70, "algo:1", at, status))
        metrics.observe(RunEvent(Stage.FINISHED, 8, 80, "algo:1", at, RunStatus.CRASHED))
        metrics.server_call(0.02, False)
        metrics.server_call(1.5, True)
        metrics.reconnected()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            ok = await client.get("/health")
            state["health"] = Health(False, {"server": "logged in", "websocket": "not connected"})
            sick = await client.get("/health")
            scraped = await client.get("/metrics")
    finally:
        await server.stop()

    assert (ok.status_code, ok.json()) == (200, {"status": "ok", "server": "logged in"})
    assert (sick.status_code, sick.json()["status"], sick.json()["websocket"]) == (503, "unhealthy", "not connected")
    found = samples(scraped.text)
    assert state["refreshed"] == 1
    assert found[("v6node_runs_received_total", ())] == 1
    assert found[("v6node_runs_started_total", ())] == 1
    assert found[("v6node_runs_finished_total", (("status", "completed"),))] == 1
    assert found[("v6node_runs_finished_total", (("status", "crashed"),))] == 1
    assert found[("v6node_run_duration_seconds_count", ())] == 1
    assert (found[("v6node_queue_depth", ())], found[("v6node_journal_entries", ())]) == (3, 12)
    assert found[("v6node_websocket_reconnects_total", ())] == 1
    assert found[("v6node_server_request_seconds_count", ())] == 2
    assert found[("v6node_server_request_failures_total", ())] == 1
