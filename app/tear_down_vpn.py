"""Use case: at stop, take the node off the VPN and remove the host's forwarding for it."""
from __future__ import annotations

import logging

from v6node.app.session import NodeSession
from v6node.domain.config import NodeConfig
from v6node.domain.errors import NodeError
from v6node.ports.vpn_client import VpnClient
from v6node.ports.vpn_server_api import VpnServerApi

log = logging.getLogger("v6node.node")


class TearDownVpn:
    """Withdraw the node's VPN address, stop the client and remove the host rules; returns what stays.

    Business rules:
    - the address this process published is cleared on the server (``PATCH node``
      ``clear_ip``), so that no station tries to reach a node that is gone;
    - the client's container and the runs' helpers carry the node's label and go with
      its other containers;
    - the host rules go too, also those a killed node process left, even when the config
      no longer has ``vpn_subnet`` (that costs nothing when there are none);
    - everything is tried; what fails is returned for the clean-up's report.
    """

    def __init__(self, config: NodeConfig, client: VpnClient, server: VpnServerApi, session: NodeSession) -> None:
        self.config = config
        self.client = client
        self.server = server
        self.session = session

    async def __call__(self) -> list[str]:
        left = []
        connected, self.session.vpn = self.session.vpn, None
        if connected is not None and self.session.identity is not None:
            try:
                await self.server.set_vpn_address(self.session.identity.node_id, None)
            except NodeError as exc:
                log.warning("could not withdraw the node's VPN address on the server: %s", exc)
        if self.config.vpn is not None:
            try:
                await self.client.disconnect()
            except NodeError as exc:
                left.append(f"the VPN client ({exc})")
        try:
            await self.client.close_forwarding()
        except NodeError as exc:
            left.append(f"the host's forwarding rules for the VPN ({exc})")
        if connected is not None:
            log.info("left the VPN: address %s withdrawn, client stopped, forwarding removed", connected.vpn_address)
        return left
