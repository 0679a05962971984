"""Use case: at stop, let go of the operator's containers and remove the firewall exception."""
from __future__ import annotations

import logging

from v6node.app.sidecars import RunningSidecars
from v6node.domain.config import NodeConfig
from v6node.domain.containers import network_name
from v6node.domain.errors import NodeError
from v6node.ports.service_firewall import ServiceFirewall
from v6node.ports.service_linker import ServiceLinker

log = logging.getLogger("v6node.node")


class TearDownEgress:
    """Disconnect the linked containers and remove the firewall exception; returns what stays.

    Business rules:
    - linked containers are disconnected from the algorithm network, never stopped or
      removed (they are the operator's);
    - the sidecars themselves carry the node's label and go with its other containers;
    - everything is tried; what fails is returned for the clean-up's report.
    """

    def __init__(
        self, config: NodeConfig, linker: ServiceLinker, firewall: ServiceFirewall, sidecars: RunningSidecars
    ) -> None:
        self.config = config
        self.linker = linker
        self.firewall = firewall
        self.sidecars = sidecars

    async def __call__(self) -> list[str]:
        self.sidecars.clear()
        left = []
        network = network_name(self.config.name)
        for service in self.config.egress.services:
            try:
                await self.linker.unlink(service, network)
                log.info("disconnected linked docker service %s from %s (it keeps running)", service.container, network)
            except NodeError as exc:
                left.append(f"the link of container {service.container} to {network} ({exc})")
        try:
            await self.firewall.close()
        except NodeError as exc:
            left.append(f"the firewall exception for the algorithm network ({exc})")
        return left
