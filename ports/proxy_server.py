"""The local proxy through which algorithm containers reach the server."""
from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class ProxyServer(Protocol):
    async def start(self, host: str) -> int:
        """Listen on ``host``; returns the port algorithms must use."""

    async def stop(self) -> None: ...
