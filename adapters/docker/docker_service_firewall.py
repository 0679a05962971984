"""ServiceFirewall as two tagged rules in the host's ``DOCKER-USER`` chain, made by a helper container.

Why rules at all: the algorithm network is made with ``enable_icc=false``, which the engine
enforces with ``FORWARD -i <bridge> -o <bridge> -j DROP``, so that no algorithm reaches
another. A sidecar or a linked container on that network is just as unreachable. Measured
alternatives (Docker 20.10, iptables-nft): a sidecar in the host's network namespace bound
to the network's gateway is reachable (like the node's proxy), but it cannot serve a linked
container, two tunnels on one port collide, and it changes the names and ports algorithms
use; rules by a container's address open a way between algorithms when that container
stops, because the engine gives its address to the next container at once.

So the node lets algorithms reach the network's **service range** only (the upper half of
its subnet, which the engine never hands out: see ``networks``), with two rules inserted at
the top of ``DOCKER-USER`` (the chain the engine keeps for its users and never flushes)::

    -i <bridge> -o <bridge> -d <service range> -j ACCEPT
    -i <bridge> -o <bridge> -s <service range> -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT

Services answer but cannot open connections to algorithms; algorithms still cannot reach
each other. Both rules carry the comment ``v6node:<node>:services`` and are kept by
``HostRules``: removed by that comment at stop and before they are made again, also after
a killed node process (a marker file in the data folder says that there may be some).
"""
from __future__ import annotations

from v6node.adapters.docker.docker_container_runtime import DockerContainerRuntime
from v6node.adapters.docker.host_rules import HostRules
from v6node.adapters.docker.networks import bridge_name, network_named, service_range
from v6node.domain.errors import ContainerError
from v6node.ports.service_firewall import ServiceFirewall


def firewall_tag(node_name: str) -> str:
    # ':' cannot occur in a node name, so no node's tag is a prefix of another's.
    return f"v6node:{node_name}:services"


class DockerServiceFirewall(ServiceFirewall):
    def __init__(self, runtime: DockerContainerRuntime, node_name: str, image: str, marker_file: str) -> None:
        self.runtime = runtime
        self.rules = HostRules(runtime, node_name, image, firewall_tag(node_name), marker_file)

    async def open(self, network: str) -> None:
        details = await self.runtime.call(network_named, self.runtime.api, network)
        services = service_range(details)
        if services is None:
            raise ContainerError(
                f"network {network} has no service range (an older v6node made it while algorithms ran on it): "
                "stop the node, remove the network and start the node again"
            )
        bridge = bridge_name(details)
        rule = f"-i {bridge} -o {bridge}"
        await self.rules.replace(
            [f"{rule} -d {services}", f"{rule} -s {services} -m conntrack --ctstate ESTABLISHED,RELATED"],
            f"{bridge} {services}",
        )

    async def close(self) -> None:
        await self.rules.remove()
