"""ServiceLinker on the engine: the operator's containers join the algorithm network by alias."""
from __future__ import annotations

import ipaddress
from typing import Any

import docker.errors

from v6node.adapters.docker.docker_container_runtime import DockerContainerRuntime
from v6node.adapters.docker.errors import docker_errors
from v6node.adapters.docker.networks import free_service_address, network_named, service_range
from v6node.domain.egress import LinkedService, ServiceLink
from v6node.domain.errors import ContainerNotFound
from v6node.ports.service_linker import ServiceLinker


class DockerServiceLinker(ServiceLinker):
    """``docker network connect --alias <alias> --ip <service address>``, and disconnect.

    The container gets a fixed address from the network's service range (the bottom of it),
    which the engine keeps for it across its restarts; only that range is open to
    algorithms. It is connected whether it runs or not (a stopped one joins when it starts).
    """

    def __init__(self, runtime: DockerContainerRuntime) -> None:
        self.runtime = runtime

    async def link(self, service: ServiceLink, network: str) -> LinkedService:
        return await self.runtime.call(self._link, service, network)

    async def unlink(self, service: ServiceLink, network: str) -> None:
        await self.runtime.call(self._unlink, service, network)

    def _link(self, service: ServiceLink, network: str) -> LinkedService:
        api = self.runtime.api
        container = self._inspect(service.container)
        details = network_named(api, network)
        endpoint = (container["NetworkSettings"].get("Networks") or {}).get(network)
        if endpoint is not None and not _linked_as_asked(endpoint, service, details):
            with docker_errors(f"disconnecting {service.container} from {network}"):
                api.disconnect_container_from_network(container["Id"], network, force=True)
            endpoint = None
        if endpoint is None:
            address = free_service_address(details, from_top=False)
            with docker_errors(f"connecting {service.container} to {network}"):
                api.connect_container_to_network(
                    container["Id"], network, aliases=list(service.aliases), ipv4_address=address
                )
            container = self._inspect(service.container)
            endpoint = container["NetworkSettings"]["Networks"][network]
        return LinkedService(
            container=service.container,
            aliases=service.aliases,
            address=_fixed_address(endpoint) or "",
            running=bool(container["State"].get("Running")),
        )

    def _unlink(self, service: ServiceLink, network: str) -> None:
        with docker_errors(f"disconnecting {service.container} from {network}"):
            try:
                self.runtime.api.disconnect_container_from_network(service.container, network, force=True)
            except docker.errors.NotFound:
                pass  # the container or the network is gone
            except docker.errors.APIError as exc:
                if "is not connected" not in str(exc.explanation or exc):
                    raise

    def _inspect(self, name: str) -> dict[str, Any]:
        with docker_errors(f"container {name}"):
            try:
                return dict(self.runtime.api.inspect_container(name))
            except docker.errors.NotFound:
                raise ContainerNotFound(f"there is no container named {name!r}") from None


def _fixed_address(endpoint: dict[str, Any]) -> str | None:
    return (endpoint.get("IPAMConfig") or {}).get("IPv4Address") or None


def _linked_as_asked(endpoint: dict[str, Any], service: ServiceLink, network: dict[str, Any]) -> bool:
    """Linked by an earlier node process with these aliases and a fixed service address."""
    address = _fixed_address(endpoint)
    services = service_range(network)
    return (
        address is not None
        and services is not None
        and ipaddress.IPv4Address(address) in services
        and set(service.aliases) <= set(endpoint.get("Aliases") or [])
    )
