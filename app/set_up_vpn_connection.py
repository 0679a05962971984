"""Use case: connect the node to the VPN between stations when ``vpn_subnet`` is set (spec §9.3)."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

from v6node.app.checklist import step_done
from v6node.app.session import NodeSession
from v6node.app.sidecars import RunningSidecars, SupervisedSidecar
from v6node.domain.config import NodeConfig
from v6node.domain.containers import network_name
from v6node.domain.egress import Sidecar, SidecarExit
from v6node.domain.errors import NodeError, RuntimeUnavailable, ServerRejected, SidecarFailed
from v6node.domain.vpn import VPN_CONFIG_FILE, VpnConfig, VpnConnection
from v6node.ports.vpn_client import VpnClient
from v6node.ports.vpn_server_api import VpnServerApi

log = logging.getLogger("v6node.node")

WHAT = "the VPN client"


class SetUpVpnConnection:
    """Connect to the VPN, let the host forward between it and the algorithm network and
    publish the node's VPN address; returns the connection, None when there is none.

    Business rules:
    - without ``vpn_subnet`` nothing happens: no image is pulled, no container made, no
      server call made;
    - the client uses the configuration in the data folder (``vpn/vpn-config.ovpn.conf``);
      without one it asks the server (``GET vpn``) and stores the answer; when a stored one
      does not connect, a fresh one is fetched and tried once;
    - the address the VPN server gives must lie inside ``vpn_subnet``;
    - any failure leaves the node running without the VPN, with one ERROR line that says
      why; what was made for the VPN is removed again;
    - once connected the client is supervised: started again when it stops, with the
      forwarding of running runs restored and its address published again if it changed.
    """

    def __init__(
        self, config: NodeConfig, client: VpnClient, server: VpnServerApi, session: NodeSession,
        sidecars: RunningSidecars,
    ) -> None:
        self.config = config
        self.client = client
        self.server = server
        self.session = session
        self.sidecars = sidecars

    async def __call__(self) -> VpnConnection | None:
        vpn = self.config.vpn
        if vpn is None:
            return None
        network = network_name(self.config.name)
        try:
            connection = await self._connect(vpn, network)
        except RuntimeUnavailable:
            raise
        except NodeError as exc:
            log.error(
                "VPN disabled: %s. Algorithms of this node cannot reach those of other stations over the VPN "
                "(vpn_subnet %s); the node goes on without it", _reason(exc), vpn.subnet,
            )
            await self._undo()
            return None
        self.session.vpn = connection
        self.sidecars.add(SupervisedSidecar(WHAT, connection.sidecar, self._wait, self._restarter(vpn, network)))
        log.info(
            "VPN ready: this node's algorithms are reached at %s (vpn_subnet %s); its client %s is on network %s at %s",
            connection.vpn_address, vpn.subnet, connection.sidecar.name, network, connection.sidecar.address,
        )
        step_done("vpn", f"connected as {connection.vpn_address} (vpn_subnet {vpn.subnet})")
        return connection

    async def _connect(self, vpn: VpnConfig, network: str) -> VpnConnection:
        fetched = False
        if await self.client.saved_config() is None:
            log.info("no VPN configuration in the data folder (vpn/%s): asking the server for one", VPN_CONFIG_FILE)
            await self._fetch()
            fetched = True
        try:
            connection = await self.client.connect(network)
        except SidecarFailed as exc:
            if fetched:
                raise
            log.warning("the stored VPN configuration did not connect (%s); asking the server for a fresh one", exc.reason)
            await self._fetch()
            connection = await self.client.connect(network)
        await self._accept(vpn, network, connection)
        return connection

    async def _fetch(self) -> None:
        try:
            text = await self.server.vpn_config()
        except ServerRejected as exc:
            raise SidecarFailed(
                WHAT, f"the server gives no VPN configuration (GET vpn: HTTP {exc.status}, {exc.message})"
            ) from exc
        await self.client.save_config(text)
        log.info("stored the VPN configuration from the server in the data folder (vpn/%s)", VPN_CONFIG_FILE)

    async def _accept(self, vpn: VpnConfig, network: str, connection: VpnConnection) -> None:
        if not vpn.contains(connection.vpn_address):
            raise SidecarFailed(
                WHAT, f"the VPN server gave it the address {connection.vpn_address}, outside vpn_subnet {vpn.subnet}"
            )
        await self.client.open_forwarding(network, vpn.subnet)
        await self.server.set_vpn_address(self.session.me().node_id, connection.vpn_address)

    async def _undo(self) -> None:
        for step in (self.client.disconnect, self.client.close_forwarding):
            with contextlib.suppress(NodeError):
                await step()

    async def _wait(self, _sidecar: Sidecar) -> SidecarExit:
        connection = self.session.vpn
        if connection is None:
            return SidecarExit(-1, "it is not connected")
        return await self.client.wait(connection)

    def _restarter(self, vpn: VpnConfig, network: str) -> Callable[[], Awaitable[Sidecar]]:
        async def restart() -> Sidecar:
            before = self.session.vpn
            self.session.vpn = None  # runs that start meanwhile go without the VPN
            connection = await self.client.connect(network)
            await self._accept(vpn, network, connection)
            self.session.vpn = connection
            was = f" (was {before.vpn_address})" if before is not None and before.vpn_address != connection.vpn_address else ""
            log.info("VPN client reconnected as %s%s; address published, forwarding of running runs restored", connection.vpn_address, was)
            return connection.sidecar

        return restart


def _reason(exc: NodeError) -> str:
    if isinstance(exc, SidecarFailed):
        return exc.reason if exc.what == WHAT else f"{exc.what}: {exc.reason}"
    return str(exc)
