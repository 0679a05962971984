"""The vantage6 server's VPN endpoints as the node uses them (spec §6 rows 14, 15, 25, 26)."""
from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class VpnServerApi(Protocol):
    """``GET vpn``, ``PATCH node/<id>`` (``ip``), ``POST port`` and ``DELETE port``.

    Errors as ``ServerApi``: ``ServerUnavailable`` (retryable), ``ServerRejected``; a server
    without a VPN service answers ``GET vpn`` with 501, one whose VPN portal refuses it with
    500, one whose VPN server is unreachable with 503 (its documented contract). Every call
    is idempotent except ``register_port``, which adds a port each time (``remove_ports``
    first when registering again).
    """

    async def vpn_config(self) -> str:
        """The OpenVPN client configuration the server's VPN portal issues for this node."""

    async def set_vpn_address(self, node_id: int, address: str | None) -> None:
        """Publish the node's VPN address (None clears it); other stations' algorithms reach
        this node's algorithms there."""

    async def register_port(self, run_id: int, port: int, label: str | None) -> None:
        """Announce that ``port`` of the node's VPN address leads to the algorithm of ``run_id``."""

    async def remove_ports(self, run_id: int) -> None:
        """Withdraw every port of ``run_id``."""
