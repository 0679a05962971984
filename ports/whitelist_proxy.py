"""The whitelist proxy: the one way out of the algorithm network, to listed destinations only (spec §9.1)."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from v6node.domain.egress import Sidecar, SidecarExit, WhitelistConfig


@runtime_checkable
class WhitelistProxy(Protocol):
    """An HTTP(S) proxy that algorithms reach at ``squid:3128`` on their network.

    It forwards a request only when its port is listed and its destination is a listed
    domain or IP, and refuses everything else with HTTP 403; it reaches out through the
    node's sidecar network, never through the algorithm network.

    Errors: ``SidecarFailed`` (it could not be made or did not become ready; the reason says
    why), ``RuntimeUnavailable``. ``start`` replaces a proxy an earlier node process left
    behind, so it is safe to call again; cancelling it leaves at most a container that the
    node's clean-up (by label) removes.
    """

    async def start(self, whitelist: WhitelistConfig, network: str) -> Sidecar:
        """Start the proxy for ``whitelist`` on the algorithm ``network``; returns once it
        accepts connections."""

    async def wait(self, sidecar: Sidecar) -> SidecarExit:
        """Until the proxy's container stops (or is gone); cancelling stops waiting only."""
