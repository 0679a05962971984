"""Use case: open the ``ssh-tunnels``, each in a sidecar of its own."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from v6node.app.sidecars import RunningSidecars, SupervisedSidecar
from v6node.domain.config import NodeConfig
from v6node.domain.containers import network_name
from v6node.domain.egress import Sidecar, SshTunnelConfig
from v6node.domain.errors import ContainerError, RuntimeUnavailable, SidecarFailed
from v6node.ports.tunnel_manager import TunnelManager

log = logging.getLogger("v6node.node")


class SetUpSshTunnels:
    """Open every tunnel; algorithms reach each at ``<hostname>:<bind port>``.

    Business rules:
    - every tunnel has its own container and configuration, so all of them work at once
      (the reference keeps only the last one);
    - a tunnel that fails (a wrong fingerprint, a refused key, an unreachable server) is
      logged as an ERROR that names it and says why, and the node goes on without it; an
      unreachable Docker engine stops the start;
    - a tunnel that is ready is supervised: started again when it stops while the node runs.
    """

    def __init__(self, config: NodeConfig, tunnels: TunnelManager, sidecars: RunningSidecars) -> None:
        self.config = config
        self.tunnels = tunnels
        self.sidecars = sidecars

    async def __call__(self) -> list[Sidecar]:
        network = network_name(self.config.name)
        started = []
        for index, tunnel in enumerate(self.config.egress.tunnels):
            try:
                sidecar = await self.tunnels.start(tunnel, network)
            except RuntimeUnavailable:
                raise
            except ContainerError as exc:
                reason = exc.reason if isinstance(exc, SidecarFailed) else str(exc)
                log.error(
                    "ssh tunnel '%s' (ssh-tunnels[%d], %s@%s:%d) failed: %s. Algorithms cannot reach %s:%d; "
                    "the node goes on without this tunnel", tunnel.hostname, index, tunnel.username, tunnel.ssh_host,
                    tunnel.ssh_port, reason, tunnel.hostname, tunnel.bind_port,
                )
                continue
            log.info(
                "ssh tunnel '%s' ready: algorithms reach %s:%d, forwarded through %s@%s:%d to %s:%d",
                tunnel.hostname, tunnel.hostname, tunnel.bind_port, tunnel.username, tunnel.ssh_host,
                tunnel.ssh_port, tunnel.dest_ip, tunnel.dest_port,
            )
            self.sidecars.add(
                SupervisedSidecar(f"ssh tunnel '{tunnel.hostname}'", sidecar, self.tunnels.wait, self._restart(tunnel, network))
            )
            started.append(sidecar)
        return started

    def _restart(self, tunnel: SshTunnelConfig, network: str) -> Callable[[], Awaitable[Sidecar]]:
        async def restart() -> Sidecar:
            return await self.tunnels.start(tunnel, network)

        return restart
