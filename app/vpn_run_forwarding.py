"""Per run, while the node is on the VPN: its algorithm's way in and out over the VPN (spec §7.6 step 5)."""
from __future__ import annotations

import logging

from attrs import evolve

from v6node.app.session import NodeSession
from v6node.domain.config import NodeConfig
from v6node.domain.containers import ContainerSpec
from v6node.domain.errors import NodeError
from v6node.domain.model import Run
from v6node.ports.vpn_client import VpnClient
from v6node.ports.vpn_server_api import VpnServerApi

log = logging.getLogger("v6node.run")


class VpnRunForwarding:
    """``attach`` before a run's container starts, ``detach`` once the run has ended.

    Business rules:
    - without ``vpn_subnet`` both do nothing (no container, no server call);
    - while the VPN client is connected, the algorithm joins the network of a helper
      container whose default route goes through the client, and each TCP port its image
      exposes (8888 when none; labelled by the image's ``p<port>`` label) gets a free port
      of the node's VPN address (49152-65534) that leads to it;
    - the ports are registered with the server (``POST port``, after withdrawing any the
      run had), so that the run's peers find them with ``GET vpn/algorithm/addresses``;
    - when the VPN is down (failed, or its client is being restarted) or the forwarding
      fails, the run starts without the VPN and a WARNING says why: the VPN never fails a
      run by itself;
    - ``detach`` withdraws the run's ports and removes its helper and forwarding.
    """

    def __init__(self, config: NodeConfig, client: VpnClient, server: VpnServerApi, session: NodeSession) -> None:
        self.config = config
        self.client = client
        self.server = server
        self.session = session
        self._attached: set[int] = set()  # runs whose ports this process registered

    async def attach(self, run: Run, spec: ContainerSpec) -> ContainerSpec:
        if self.config.vpn is None:
            return spec
        connection = self.session.vpn
        if connection is None:
            log.warning("run %s starts without the VPN: the node is not connected to it", run.id)
            return spec
        try:
            forwarded = await self.client.forward_run(run.id, run.task.image, spec.network, spec.extra_hosts)
        except NodeError as exc:
            log.warning("run %s starts without the VPN: its forwarding could not be made (%s)", run.id, exc)
            return spec
        self._attached.add(run.id)
        try:
            await self.server.remove_ports(run.id)
            for port in forwarded.ports:
                await self.server.register_port(run.id, port.vpn_port, port.label)
        except NodeError as exc:
            log.warning("run %s starts without the VPN: its ports could not be registered (%s)", run.id, exc)
            await self.detach(run.id)
            return spec
        shown = ", ".join(
            f"{connection.vpn_address}:{p.vpn_port} -> {p.algorithm_port}" + (f" ({p.label})" if p.label else "")
            for p in forwarded.ports
        )
        log.info("run %s: reached over the VPN at %s", run.id, shown)
        # The helper holds the hosts entries: the engine refuses them beside a shared namespace.
        return evolve(spec, network=forwarded.network_mode, extra_hosts={})

    async def detach(self, run_id: int) -> None:
        if self.config.vpn is None:
            return
        registered = run_id in self._attached
        self._attached.discard(run_id)
        try:
            had = await self.client.release_run(run_id)
        except NodeError as exc:
            log.warning("run %s: its VPN forwarding could not be removed (%s); the node's stop removes it", run_id, exc)
            had = True
        if not (had or registered):
            return
        try:
            await self.server.remove_ports(run_id)
        except NodeError as exc:
            log.warning("run %s: its VPN ports could not be withdrawn on the server (%s)", run_id, exc)
