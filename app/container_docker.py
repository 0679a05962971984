"""The composition root's Docker part: the local or swarm runtime and the sidecar adapters
(Squid, SSH tunnels, the service firewall, the VPN client), each made from plain config values."""
from __future__ import annotations

import os
from collections.abc import Iterator

from v6node.adapters.docker.docker_container_runtime import DockerContainerRuntime
from v6node.adapters.docker.docker_service_firewall import DockerServiceFirewall
from v6node.adapters.docker.sidecars import SidecarLauncher
from v6node.adapters.squid.docker_whitelist_proxy import DockerWhitelistProxy
from v6node.adapters.ssh.docker_tunnel_manager import DockerTunnelManager
from v6node.adapters.vpn.docker_vpn_client import DockerVpnClient
from v6node.domain.config import NodeConfig
from v6node.domain.errors import ConfigError
from v6node.domain.vpn import VpnConfig


def tasks_dir(config: NodeConfig) -> str:
    """Where the runs' folders are: ``<data folder>/tasks``."""
    return os.path.join(config.data_dir, "tasks")


def docker_runtime(config: NodeConfig, own_container: str | None) -> Iterator[DockerContainerRuntime]:
    """The local engine, or a swarm through the manager ``DOCKER_HOST`` names (``runtime.kind``)."""
    settings = config.runtime
    runtime: DockerContainerRuntime
    if settings.kind == "swarm":
        if own_container is not None:
            raise ConfigError(
                str(config.source or ""), "runtime.kind",
                "swarm is for a node on a swarm manager's host, not one in a container "
                "(v6node start --docker): the jobs bind-mount the task folders at the same path on every "
                "host, and a node in a container has them at other paths"
            )
        assert config.proxy_check_image is not None  # the config loader insists on it
        # Imported here: a node on one engine does not load the swarm adapter.
        from v6node.adapters.docker.swarm_container_runtime import SwarmContainerRuntime
        from v6node.adapters.docker.swarm_specs import Placement

        runtime = SwarmContainerRuntime(
            placement=Placement(
                constraints=settings.constraints, reserve_cpus=settings.reserve_cpus,
                reserve_memory=settings.reserve_memory, gpu_resource=settings.gpu_resource,
            ),
            proxy_address=settings.proxy_address,
            relay_image=config.proxy_check_image,
            volumes_dir=os.path.join(tasks_dir(config), ".volumes"),
        )
    else:
        runtime = DockerContainerRuntime(own_container=own_container)
    try:
        yield runtime
    finally:
        runtime.close()


def _launcher(config: NodeConfig, runtime: DockerContainerRuntime) -> SidecarLauncher:
    egress = config.egress
    return SidecarLauncher(runtime, config.name, egress.sidecar_network, egress.extra_hosts, egress.ready_timeout)


def whitelist_proxy(config: NodeConfig, runtime: DockerContainerRuntime) -> DockerWhitelistProxy:
    return DockerWhitelistProxy(_launcher(config, runtime), config.name, config.egress.images.squid)


def tunnels(config: NodeConfig, runtime: DockerContainerRuntime) -> DockerTunnelManager:
    return DockerTunnelManager(_launcher(config, runtime), config.name, config.egress.images.ssh_tunnel)


def vpn_client(config: NodeConfig, runtime: DockerContainerRuntime) -> DockerVpnClient:
    # Without vpn_subnet nothing of it runs; its clean-up still finds rules a killed process left.
    vpn = config.vpn or VpnConfig(subnet="0.0.0.0/32")
    return DockerVpnClient(
        runtime, _launcher(config, runtime), config.name, vpn.client_image, vpn.helper_image,
        config.egress.images.network_config, os.path.join(config.data_dir, "vpn"),
        os.path.join(config.data_dir, "vpn-forwarding"),
    )


def service_firewall(config: NodeConfig, runtime: DockerContainerRuntime) -> DockerServiceFirewall:
    marker = os.path.join(config.data_dir, "service-firewall")
    return DockerServiceFirewall(runtime, config.name, config.egress.images.network_config, marker)
