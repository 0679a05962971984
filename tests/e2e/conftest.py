"""End-to-end fixtures: a `v6node start` process against the real server and dockerd."""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from tests.rig.images import ensure_images
from tests.rig.node_process import NodeProcess, node_config
from tests.rig.researcher import Researcher
from tests.rig.server import Federation, NodeCredentials, RealServer
from v6node.adapters.crypto.rsa_cryptor import create_private_key_pem


@pytest.fixture(scope="session")
def test_images() -> None:
    ensure_images()


def leftovers(client: docker.DockerClient, node_name: str) -> dict[str, list[str]]:
    """Everything in Docker that still carries the node's label."""
    label = f"v6node.node={node_name}"
    return {
        "containers": [c.name for c in client.containers.list(all=True, filters={"label": label})],
        "networks": [n.name for n in client.networks.list(filters={"label": label})],
        "volumes": [v.name for v in client.volumes.list(filters={"label": label})],
    }


NO_LEFTOVERS = {"containers": [], "networks": [], "volumes": []}


@pytest.fixture
def start_node(real_server: RealServer, tmp_path_factory, test_images) -> Iterator[Callable[..., NodeProcess]]:
    """Factory: write a node config for ``node`` and start `v6node start` on it.

    ``env`` goes to the process's environment (``DOCKER_HOST`` for a private engine); the
    other keyword arguments are config keys.
    """
    started: list[NodeProcess] = []

    def start(
        node: NodeCredentials, wait: bool = True, name: str | None = None, env: dict[str, str] | None = None, **extra
    ) -> NodeProcess:
        name = name or f"e2e-{uuid.uuid4().hex[:8]}"
        home = tmp_path_factory.mktemp(name)
        config = node_config(real_server, node, home, **extra)
        process = NodeProcess.write_config(home / f"{name}.yaml", config, env)
        process.name = name
        started.append(process)
        process.start(wait=wait)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def researcher_for(real_server: RealServer) -> Iterator[Callable[[Federation], Researcher]]:
    opened: list[Researcher] = []

    def make(federation: Federation, private_key: str | None = None) -> Researcher:
        researcher = Researcher(real_server, federation.user, private_key)
        opened.append(researcher)
        return researcher

    yield make
    for researcher in opened:
        researcher.close()


@pytest.fixture(scope="session")
def org_keys(tmp_path_factory) -> list[Path]:
    """RSA-4096 private keys, as vantage6 creates them, for two organizations."""
    folder = tmp_path_factory.mktemp("keys")
    keys = []
    for i in range(2):
        path = folder / f"privkey_org{i}.pem"
        path.write_bytes(create_private_key_pem())
        keys.append(path)
    return keys


def encryption(key: Path) -> dict:
    return {"encryption": {"enabled": True, "private_key": str(key)}}


