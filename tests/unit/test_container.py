"""The composition root: every dependency is provided, and the memory adapter set can stand in for the real one."""
from __future__ import annotations

import pytest

from v6node.adapters.memory.harness import MemoryNodeHarness, default_config
from v6node.app.container import Adapters, NodeContainer
from v6node.app.container_memory import MemoryAdapters
from v6node.app.node import Node
from v6node.domain.config import RuntimeConfig
from v6node.domain.errors import ConfigError


def test_every_dependency_of_the_production_wiring_is_provided() -> None:
    NodeContainer(config=default_config()).check_dependencies()


def test_the_memory_adapters_have_exactly_the_production_adapters_names() -> None:
    assert set(MemoryAdapters.providers) == set(Adapters.providers)


def test_the_harness_builds_its_node_through_the_production_container() -> None:
    h = MemoryNodeHarness()
    assert isinstance(h.node, Node)
    assert h.node is h.container.node()  # one node per container
    # The node's use cases share the one run queue, session and adapters of the container.
    assert h.node.use.sync_runs.queue is h.node.queue is h.node.use.queue_new_runs.queue
    assert h.node.use.execute_run.runtime is h.runtime
    assert h.node.use.report_result is h.node.use.execute_run.report


def test_a_node_in_a_container_is_refused_a_swarm_runtime() -> None:
    config = default_config(runtime=RuntimeConfig(kind="swarm"), proxy_check_image="busybox:stable")
    container = NodeContainer(config=config, own_container="v6node-memnode")
    with pytest.raises(ConfigError, match="runtime.kind.*not one in a container"):
        container.adapters.runtime()


def test_metrics_are_kept_only_when_the_local_endpoint_serves_them() -> None:
    from v6node.adapters.monitoring.no_metrics import NoNodeMetrics
    from v6node.adapters.monitoring.prometheus_node_metrics import PrometheusNodeMetrics
    from v6node.domain.config import Monitoring

    assert isinstance(Adapters(config=default_config()).node_metrics(), NoNodeMetrics)
    served = Adapters(config=default_config(monitoring=Monitoring(endpoint=True))).node_metrics()
    assert isinstance(served, PrometheusNodeMetrics)
    assert b"v6node_runs_received" in served.exposition()[0]
