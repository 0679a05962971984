"""Fixtures for tests against the real Docker engine: a node name, the adapter, its network;
for the egress tests also the service firewall (the engine client and "outside" are the suite's)."""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from v6node.adapters.docker.docker_container_runtime import DockerContainerRuntime
from v6node.adapters.docker.docker_service_firewall import DockerServiceFirewall
from v6node.domain.containers import managed_labels, network_name


@pytest.fixture
def node() -> str:
    """A node name of its own per test, so tests never touch each other's resources."""
    return f"it{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def runtime(node: str) -> AsyncIterator[DockerContainerRuntime]:
    engine = DockerContainerRuntime()
    yield engine
    await engine.remove_labelled(managed_labels(node))
    engine.close()


@pytest.fixture
async def network(runtime: DockerContainerRuntime, node: str) -> tuple[str, str]:
    """(name, gateway) of the node's internal network; removed with the node's labels."""
    name = network_name(node)
    return name, await runtime.ensure_network(name, managed_labels(node))


@pytest.fixture
async def firewall(
    runtime: DockerContainerRuntime, node: str, network: tuple[str, str], images: dict[str, str], tmp_path: Path
) -> AsyncIterator[DockerServiceFirewall]:
    """The node's service firewall opened on its network (``images`` is each module's own fixture)."""
    made = DockerServiceFirewall(runtime, node, images["network_config"], str(tmp_path / "service-firewall"))
    await made.open(network[0])
    yield made
    await made.close()
