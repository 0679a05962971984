"""The node's algorithm networks: internal bridges without traffic between containers."""
from __future__ import annotations

import logging
import time
from contextlib import suppress
from typing import Any

import docker
import docker.errors

from v6node.adapters.docker.errors import docker_errors, status_code
from v6node.domain.errors import ContainerError

log = logging.getLogger(__name__)

# No route out (internal) and no traffic between containers.
NO_ICC = "com.docker.network.bridge.enable_icc"
NETWORK_OPTIONS = {NO_ICC: "false"}
# How long a network removal waits for the engine to release the endpoints of removed containers.
RELEASE_SECONDS = 20.0


def isolated(network: dict[str, Any]) -> bool:
    return bool(network.get("Internal")) and (network.get("Options") or {}).get(NO_ICC) == "false"




def ensure_network(api: docker.APIClient, name: str, labels: dict[str, str]) -> str:
    """Create (or reuse) the network; returns its gateway address."""
    with docker_errors(f"network {name}"):
        network = _network_named(api, name)
        if network is not None and not isolated(network):
            _replace_unisolated(api, name, network)
            network = None
        if network is None:
            try:
                api.create_network(
                    name, driver="bridge", internal=True, labels=labels, options=NETWORK_OPTIONS,
                    check_duplicate=True,
                )
            except docker.errors.APIError as exc:
                if status_code(exc) != 409:  # 409: created meanwhile by someone else; reuse it
                    raise
            network = _network_named(api, name)
        if network is None:
            raise ContainerError(f"network {name} was created but cannot be found")
    if not isolated(network):
        raise ContainerError(f"network {name} was created by someone else meanwhile and is not isolated")
    for config in (network.get("IPAM") or {}).get("Config") or []:
        if config.get("Gateway"):
            return config["Gateway"]
    raise ContainerError(f"network {name} has no gateway address in its IPAM configuration")

def _replace_unisolated(api: docker.APIClient, name: str, network: dict[str, Any]) -> None:
    """A network of an older node (or made by hand) that lets containers reach each other."""
    if network.get("Containers"):
        raise ContainerError(
            f"network {name} lets algorithm containers reach each other or the internet and "
            "containers still use it; stop them and remove the network, the node re-creates it isolated"
        )
    log.warning("network %s was not isolated (internal, no traffic between containers); re-creating it", name)
    api.remove_network(network["Id"])

def _network_named(api: docker.APIClient, name: str) -> dict[str, Any] | None:
    # The engine's name filter matches substrings, so compare exactly.
    for summary in api.networks(names=[name]):
        if summary["Name"] == name:
            return api.inspect_network(summary["Id"])
    return None


def remove_network(api: docker.APIClient, network_id: str, name: str) -> int:
    """Disconnect what is still attached, then remove; the engine may hold an endpoint for a
    moment after its container is gone ("has active endpoints"), so that is tried again
    for a bounded time."""
    deadline = time.monotonic() + RELEASE_SECONDS
    with docker_errors(f"removing network {name}"):
        while True:
            try:
                attached = api.inspect_network(network_id).get("Containers") or {}
                for container_id in attached:
                    with suppress(docker.errors.NotFound):
                        api.disconnect_container_from_network(container_id, network_id, force=True)
                api.remove_network(network_id)
                return 1
            except docker.errors.NotFound:
                return 0
            except docker.errors.APIError as exc:
                if status_code(exc) not in (403, 409) or time.monotonic() > deadline:
                    raise
            time.sleep(0.2)
