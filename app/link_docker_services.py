"""Use case: make the operator's ``docker_services`` reachable to algorithms by their aliases."""
from __future__ import annotations

import logging

from v6node.domain.config import NodeConfig
from v6node.domain.containers import network_name
from v6node.domain.egress import LinkedService
from v6node.domain.errors import ConfigError, ContainerNotFound
from v6node.ports.service_linker import ServiceLinker

log = logging.getLogger("v6node.node")


class LinkDockerServices:
    """Connect each ``alias: container`` of ``docker_services`` to the algorithm network.

    Business rules:
    - a container that does not exist stops the start with a ``ConfigError`` that names the
      key and the container (the reference logs a stack trace and runs on);
    - a container that exists but does not run is linked (it joins when it starts) and a
      WARNING says so;
    - the containers are the operator's: the node disconnects them at clean-up and never
      stops or removes them.
    """

    def __init__(self, config: NodeConfig, linker: ServiceLinker) -> None:
        self.config = config
        self.linker = linker

    async def __call__(self) -> list[LinkedService]:
        network = network_name(self.config.name)
        linked = []
        for service in self.config.egress.services:
            try:
                result = await self.linker.link(service, network)
            except ContainerNotFound:
                raise ConfigError(
                    self.config.source, f"docker_services.{service.aliases[0]}",
                    f"there is no container named {service.container!r} on this Docker engine "
                    "(start it before the node, or correct the name)",
                ) from None
            names = ", ".join(service.aliases)
            if result.running:
                log.info("linked docker service: algorithms reach container %s as %s (%s)", service.container, names, result.address)
            else:
                log.warning(
                    "linked docker service: container %s is not running; algorithms reach it as %s once it runs",
                    service.container, names,
                )
            linked.append(result)
        return linked
