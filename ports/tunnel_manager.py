"""SSH tunnels from the algorithm network to services behind an SSH server (spec §9.2)."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from v6node.domain.egress import Sidecar, SidecarExit, SshTunnelConfig


@runtime_checkable
class TunnelManager(Protocol):
    """One tunnel per ``ssh-tunnels`` entry, each with its own name and configuration, so
    that several work at once. Algorithms reach a tunnel at ``<hostname>:<bind port>``; it
    forwards to ``dest`` as the SSH server sees it. The server is trusted only when its
    host key is the configured fingerprint (strict host key checking).

    Errors: ``SidecarFailed`` whose reason names the cause in the operator's terms (the
    server's host key does not match the fingerprint, the server refused the key, it could
    not be reached, ...), ``RuntimeUnavailable``. ``start`` replaces a tunnel of the same
    hostname that an earlier node process left behind.
    """

    async def start(self, tunnel: SshTunnelConfig, network: str) -> Sidecar:
        """Open the tunnel on the algorithm ``network``; returns once it accepts connections."""

    async def wait(self, sidecar: Sidecar) -> SidecarExit:
        """Until the tunnel's container stops (or is gone); cancelling stops waiting only."""
