"""The VPN client and the server's VPN endpoints, kept in memory.

``MemoryVpnClient``: tests give it a configuration the "VPN server" refuses (``refused``),
the ports images expose (``exposed``), stop its container (``stop``) and read the host's
forwarding (``forwarding``) and each run's helper (``runs``). ``MemoryVpnServerApi`` keeps
its state in the memory server's ``MemoryServerState`` and answers ``vpn_addresses`` as the
real server answers algorithms' ``GET vpn/algorithm/addresses``.
"""
from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from typing import Any

from v6node.adapters.memory.server_api import MemoryServerApi
from v6node.domain.egress import Sidecar, SidecarExit
from v6node.domain.errors import ServerRejected, SidecarFailed
from v6node.domain.vpn import (
    SIDECAR_VPN_CLIENT,
    AlgorithmPort,
    VpnConnection,
    VpnRunNetwork,
    algorithm_ports,
    forward,
    ovpn_text,
    vpn_client_name,
)
from v6node.ports.vpn_client import VpnClient
from v6node.ports.vpn_server_api import VpnServerApi

_ids = itertools.count(1)
WHAT = "the VPN client"


class MemoryVpnClient(VpnClient):
    def __init__(self, node_name: str = "memnode", address: str = "10.76.0.2", local_address: str = "10.99.255.254") -> None:
        self.node_name = node_name
        self.address = address  # what the "VPN server" gives the client
        self.local_address = local_address
        self.config: str | None = None
        self.refused: set[str] = set()  # configurations the VPN server refuses
        self.exposed: dict[str, tuple[AlgorithmPort, ...]] = {}  # image -> ports it exposes
        self.connection: VpnConnection | None = None
        self.connects: list[str] = []  # the configuration of every connect, in order
        self.forwarding: tuple[str, str] | None = None  # (network, subnet) while the host forwards
        self.runs: dict[int, VpnRunNetwork] = {}
        self.helper_hosts: dict[int, dict[str, str]] = {}  # run id -> hosts entries its helper got
        self.released: list[int] = []
        self._exits: dict[str, asyncio.Future[SidecarExit]] = {}  # container id -> its end

    # --- test side ----------------------------------------------------------------------
    def stop(self, exit_code: int = 1, output: str = "stopped") -> None:
        """The client's container stops (it crashed, or someone killed it)."""
        if self.connection is None:
            return
        end = self._exits[self.connection.sidecar.container_id]
        self.connection = None
        if not end.done():
            end.set_result(SidecarExit(exit_code, output))

    # --- the port -----------------------------------------------------------------------
    async def saved_config(self) -> str | None:
        return self.config

    async def save_config(self, text: str) -> None:
        self.config = ovpn_text(text)

    async def connect(self, network: str) -> VpnConnection:
        self.stop(137, "replaced")
        config = self.config
        self.connects.append(config or "")
        if config is None:
            raise SidecarFailed(WHAT, "there is no VPN configuration")
        if config in self.refused:
            raise SidecarFailed(WHAT, "the VPN server refused the client's certificate (VERIFY ERROR)")
        name = vpn_client_name(self.node_name)
        sidecar = Sidecar(SIDECAR_VPN_CLIENT, name, f"vpn-{next(_ids)}", name, self.local_address, 0)
        self.connection = VpnConnection(sidecar, self.address)
        self._exits[sidecar.container_id] = asyncio.get_running_loop().create_future()
        return self.connection

    async def wait(self, connection: VpnConnection) -> SidecarExit:
        end = self._exits.get(connection.sidecar.container_id)
        if end is None:
            return SidecarExit(-1, "its container is gone")
        return await asyncio.shield(end)

    async def open_forwarding(self, network: str, subnet: str) -> None:
        self.forwarding = (network, subnet)

    async def close_forwarding(self) -> None:
        self.forwarding = None

    async def disconnect(self) -> None:
        self.stop(137, "removed")

    async def forward_run(
        self, run_id: int, image: str, network: str, extra_hosts: Mapping[str, str] | None = None
    ) -> VpnRunNetwork:
        if self.connection is None:
            raise SidecarFailed(WHAT, "it is not connected")
        ports = self.exposed.get(image) or algorithm_ports((), {})
        taken = [p.vpn_port for run in self.runs.values() for p in run.ports]
        forwarded = VpnRunNetwork(run_id, f"helper-{run_id}-{next(_ids)}", forward(ports, taken))
        self.runs[run_id] = forwarded
        self.helper_hosts[run_id] = dict(extra_hosts or {})
        return forwarded

    async def release_run(self, run_id: int) -> bool:
        if self.runs.pop(run_id, None) is None:
            return False
        self.released.append(run_id)
        return True


class MemoryVpnServerApi(VpnServerApi):
    """The VPN endpoints of one node's ``MemoryServerApi`` (its calls are counted there)."""

    def __init__(self, server: MemoryServerApi) -> None:
        self.server = server
        self.state = server.state

    def _call(self, method: str) -> None:
        self.server._call(method)  # noqa: SLF001 - one server: one count of calls and failures
        self.server._require_login()  # noqa: SLF001

    async def vpn_config(self) -> str:
        self._call("vpn_config")
        if self.state.ovpn_config is None:
            raise ServerRejected(501, "This server does not support VPN", "GET", "vpn")
        return self.state.ovpn_config

    async def set_vpn_address(self, node_id: int, address: str | None) -> None:
        self._call("set_vpn_address")
        if address:
            self.state.node_ips[node_id] = (self.server.identity.organization_id, address)
        else:
            self.state.node_ips.pop(node_id, None)

    async def register_port(self, run_id: int, port: int, label: str | None) -> None:
        self._call("register_port")
        self._own_run(run_id, "POST")
        self.state.vpn_ports.setdefault(run_id, []).append((port, label))

    async def remove_ports(self, run_id: int) -> None:
        self._call("remove_ports")
        self._own_run(run_id, "DELETE")
        self.state.vpn_ports.pop(run_id, None)

    def _own_run(self, run_id: int, method: str) -> None:
        run = self.state.runs.get(run_id)
        if run is None or run.organization_id != self.server.identity.organization_id:
            raise ServerRejected(401, "You lack the permissions to do that!", method, "port")

    def vpn_addresses(self, task_id: int, organization_id: int, only_siblings: bool = False) -> list[dict[str, Any]]:
        """What ``GET vpn/algorithm/addresses`` answers an algorithm of ``organization_id`` in ``task_id``."""
        addresses = []
        for run in self.state.runs_of(task_id):
            if only_siblings and run.organization_id == organization_id:
                continue
            node_ip = next((ip for org, ip in self.state.node_ips.values() if org == run.organization_id), None)
            for port, label in self.state.vpn_ports.get(run.id, []):
                addresses.append({
                    "port": port, "label": label, "ip": node_ip, "organization_id": run.organization_id,
                    "task_id": task_id, "parent_id": self.state.tasks[task_id].parent_id,
                })
        return addresses
