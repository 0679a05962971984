"""The node's end of the VPN between stations (spec §9.3)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from v6node.domain.egress import SidecarExit
from v6node.domain.vpn import VpnConnection, VpnRunNetwork


@runtime_checkable
class VpnClient(Protocol):
    """An OpenVPN client next to the algorithm network, the host's forwarding between the
    two, and per run a way in from the VPN to the run's algorithm.

    The client's configuration is kept where the node keeps its data (the reference's
    ``<data folder>/vpn/vpn-config.ovpn.conf``, mode 0600, LF line ends).

    Errors: ``SidecarFailed`` whose reason says why in the operator's terms (no
    configuration, the server refused the certificate, not connected within the ready
    timeout, ...), ``ContainerError`` (the host's rules could not be changed; the message
    says what stays), ``RuntimeUnavailable``. ``connect`` replaces a client an earlier node
    process left, and restores the forwarding of every run whose helper still runs; it is
    safe to call again. ``open_forwarding`` replaces this node's earlier host rules (also
    those a killed process left); ``close_forwarding``, ``release_run`` and ``disconnect``
    are idempotent and cheap when there is nothing to remove.
    """

    async def saved_config(self) -> str | None:
        """The stored client configuration, None when there is none."""

    async def save_config(self, text: str) -> None:
        """Store ``text`` (CRLF line ends become LF) as the client configuration."""

    async def connect(self, network: str) -> VpnConnection:
        """Start the client with the stored configuration on the algorithm ``network``;
        returns once the tunnel is up, with the address the VPN server gave it."""

    async def wait(self, connection: VpnConnection) -> SidecarExit:
        """Until the client's container stops (or is gone); cancelling stops waiting only."""

    async def open_forwarding(self, network: str, subnet: str) -> None:
        """Let traffic between the VPN ``subnet`` and the algorithm ``network`` pass the host."""

    async def close_forwarding(self) -> None:
        """Remove every host rule this node made for the VPN."""

    async def disconnect(self) -> None:
        """Stop and remove the client (the helpers of runs go with the runs)."""

    async def forward_run(
        self, run_id: int, image: str, network: str, extra_hosts: Mapping[str, str] | None = None
    ) -> VpnRunNetwork:
        """Make the run's helper on ``network``, route its traffic through the client and
        forward a free VPN port to each port ``image`` exposes. The helper holds the run's
        network namespace, so it also holds the run's hosts entries (``extra_hosts``)."""

    async def release_run(self, run_id: int) -> bool:
        """Remove the run's forwarding and its helper; False when it had none."""
