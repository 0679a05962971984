"""The server's VPN endpoints over the node's logged-in ``HttpxServerApi`` (same tokens, retries, errors)."""
from __future__ import annotations

from v6node.adapters.http.httpx_server_api import HttpxServerApi
from v6node.adapters.http.payloads import parsing
from v6node.ports.vpn_server_api import VpnServerApi


class HttpxVpnServerApi(VpnServerApi):
    """``GET vpn`` -> ``ovpn_config``; ``PATCH node/<id>`` with ``ip`` or ``clear_ip``; ``POST
    port`` with ``port``, ``run_id`` and ``label``; ``DELETE port?run_id=<id>``. A 501 from
    ``GET vpn`` (no VPN service on the server) is ``ServerRejected`` like any 4xx: never retried."""

    def __init__(self, server: HttpxServerApi) -> None:
        self._server = server

    async def vpn_config(self) -> str:
        body = await self._server.call("GET", "vpn")
        with parsing("GET", "vpn"):
            config = body["ovpn_config"]
            if not isinstance(config, str) or not config.strip():
                raise ValueError("ovpn_config is empty")
            return config

    async def set_vpn_address(self, node_id: int, address: str | None) -> None:
        body = {"ip": address} if address else {"clear_ip": True}
        await self._server.call("PATCH", f"node/{node_id}", json=body)

    async def register_port(self, run_id: int, port: int, label: str | None) -> None:
        await self._server.call("POST", "port", json={"port": port, "run_id": run_id, "label": label})

    async def remove_ports(self, run_id: int) -> None:
        await self._server.call("DELETE", "port", params={"run_id": run_id})
