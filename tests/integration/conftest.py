"""Fixtures for tests against the real Docker engine: a node name, the adapter, its network."""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from v6node.adapters.docker.docker_container_runtime import DockerContainerRuntime
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
