"""The node's algorithm networks: internal bridges without traffic between containers.

Each network's subnet is split in two: algorithms (and every container the engine gives an
address) get addresses from the lower half (the network's IP range); the upper half is the
**service range**, from which sidecars and linked containers get fixed addresses. The one
firewall exception the node makes (``DockerServiceFirewall``) lets algorithms reach the
service range only, so an address an algorithm gets can never be one that other algorithms
may reach: measured on Docker 20.10, a stopped container's address goes to the next
container at once, so an exception by the address of a container would open a way between
algorithms whenever a service stops.
"""
from __future__ import annotations

import ipaddress
import logging
import time
from contextlib import suppress
from typing import Any

import docker
import docker.errors
from docker.types import IPAMConfig, IPAMPool

from v6node.adapters.docker.errors import docker_errors, status_code
from v6node.domain.errors import ContainerError, ContainerNotFound

log = logging.getLogger(__name__)

# No route out (internal) and no traffic between containers.
NO_ICC = "com.docker.network.bridge.enable_icc"
NETWORK_OPTIONS = {NO_ICC: "false"}
# How long a network removal waits for the engine to release the endpoints of removed containers.
RELEASE_SECONDS = 20.0


def isolated(network: dict[str, Any]) -> bool:
    return bool(network.get("Internal")) and (network.get("Options") or {}).get(NO_ICC) == "false"


def _ipv4_config(network: dict[str, Any]) -> dict[str, Any] | None:
    for config in (network.get("IPAM") or {}).get("Config") or []:
        if config.get("Subnet") and ipaddress.ip_network(config["Subnet"]).version == 4:
            return dict(config)
    return None


def service_range(network: dict[str, Any]) -> ipaddress.IPv4Network | None:
    """The upper half of the subnet when the engine hands out only the lower half, else None."""
    config = _ipv4_config(network)
    if config is None or not config.get("IPRange"):
        return None
    subnet = ipaddress.IPv4Network(config["Subnet"])
    lower, upper = subnet.subnets()
    return upper if ipaddress.IPv4Network(config["IPRange"]) == lower else None


def bridge_name(network: dict[str, Any]) -> str:
    """The host's interface of a bridge network (the engine's default: br-<id prefix>)."""
    return (network.get("Options") or {}).get("com.docker.network.bridge.name") or f"br-{network['Id'][:12]}"


def _create(api: docker.APIClient, name: str, labels: dict[str, str], ipam: IPAMConfig | None = None) -> None:
    try:
        api.create_network(
            name, driver="bridge", internal=True, labels=labels, options=NETWORK_OPTIONS, check_duplicate=True,
            ipam=ipam,
        )
    except docker.errors.APIError as exc:
        if status_code(exc) != 409:  # 409: created meanwhile by someone else; reuse it
            raise


def _with_service_range(api: docker.APIClient, name: str, labels: dict[str, str]) -> None:
    """Let the engine pick a free subnet from its pools, then make the network again on that
    subnet with the IP range that keeps the upper half for services. Another network may take
    the subnet in between: then the engine picks again."""
    for _ in range(5):
        _create(api, name, labels)
        network = _network_named(api, name)
        config = None if network is None else _ipv4_config(network)
        if network is None or config is None or service_range(network) is not None or network.get("Containers"):
            return  # someone else's network meanwhile, or one without IPv4: use it as it is
        api.remove_network(network["Id"])
        subnet = ipaddress.IPv4Network(config["Subnet"])
        pool = IPAMPool(subnet=str(subnet), gateway=config.get("Gateway"), iprange=str(next(subnet.subnets())))
        try:
            _create(api, name, labels, IPAMConfig(pool_configs=[pool]))
            return
        except docker.errors.APIError as exc:
            log.debug("subnet %s was taken meanwhile (%s); asking for another", subnet, exc.explanation or exc)
    _create(api, name, labels)


def ensure_network(api: docker.APIClient, name: str, labels: dict[str, str]) -> str:
    """Create (or reuse) the network; returns its gateway address."""
    with docker_errors(f"network {name}"):
        network = _network_named(api, name)
        if network is not None and not isolated(network):
            _replace_unisolated(api, name, network)
            network = None
        if network is not None and service_range(network) is None:
            if network.get("Containers"):
                log.warning(
                    "network %s has no service range (made by an older v6node) and containers use it: "
                    "sidecars and linked containers cannot join it until the node re-creates it", name,
                )
            else:
                log.info("network %s has no service range (made by an older v6node); re-creating it", name)
                api.remove_network(network["Id"])
                network = None
        if network is None:
            _with_service_range(api, name, labels)
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

def network_named(api: docker.APIClient, name: str) -> dict[str, Any]:
    """The network's details; ``ContainerNotFound`` when there is none."""
    with docker_errors(f"network {name}"):
        network = _network_named(api, name)
    if network is None:
        raise ContainerNotFound(f"no Docker network named {name}")
    return network


def free_service_address(network: dict[str, Any], preferred: str | None = None, from_top: bool = True) -> str:
    """A free fixed address for a service: sidecars take them from the top of the service range
    down, linked containers from the bottom up, so that a stopped linked container (which the
    network does not list) keeps its address for when it starts again."""
    services = service_range(network)
    if services is None:
        raise ContainerError(
            f"network {network.get('Name')} has no service range (an older v6node made it while algorithms "
            "ran on it): stop the node, remove the network (docker network rm) and start the node again"
        )
    used = {str(c.get("IPv4Address") or "").split("/")[0] for c in (network.get("Containers") or {}).values()}
    if preferred and preferred not in used and ipaddress.IPv4Address(preferred) in services:
        return preferred
    for offset in range(1, services.num_addresses - 1):
        candidate = str(services.broadcast_address - offset if from_top else services.network_address + offset)
        if candidate not in used:
            return candidate
    raise ContainerError(f"network {network.get('Name')} has no free service address left")


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
                    if _being_removed(api, container_id):
                        # Its removal releases the endpoint; a forced disconnect racing that
                        # removal can leave the engine counting an endpoint that no longer
                        # exists (Docker 20.10: the network then stays until the engine restarts).
                        continue
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


def _being_removed(api: docker.APIClient, container_id: str) -> bool:
    try:
        state = api.inspect_container(container_id).get("State") or {}
    except docker.errors.NotFound:
        return True
    return state.get("Status") == "removing"
