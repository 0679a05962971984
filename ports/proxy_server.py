"""The local proxy through which algorithm containers reach the server (spec §8)."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from v6node.ports.cryptor import Cryptor


@runtime_checkable
class ProxyServer(Protocol):
    """Listens where algorithm containers can reach it and nowhere else.

    Only requests carrying a container token that the node ``authorize``d are forwarded;
    others get 401 from the proxy itself. ``start`` raises ``NodeError`` when it cannot
    listen on ``host``.
    """

    async def start(self, host: str, cryptor: Cryptor, port: int | None = None) -> int:
        """Listen on ``host`` at ``port`` (None: the adapter's default, 0: any free port).

        Returns the port algorithms must use; raises ``NodeError`` when it is taken.
        """

    def authorize(self, container_token: str) -> None:
        """Accept requests with this token (a run of this node is executing)."""

    def revoke(self, container_token: str) -> None: ...

    async def stop(self) -> None: ...
