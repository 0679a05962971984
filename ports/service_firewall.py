"""The one exception to "algorithms cannot reach other containers on their network"."""
from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class ServiceFirewall(Protocol):
    """The algorithm network lets no container reach another (so that the algorithms of
    different researchers stay apart); ``open`` lets algorithms reach the network's
    service addresses, which only sidecars and linked containers get, and nothing else.
    Services can answer, but not open connections to algorithms.

    ``open`` replaces this node's earlier exceptions (also those a killed node process
    left). ``close`` removes every exception this node made; it is cheap and does nothing
    when there are none. Errors: ``ContainerError`` (the exception could not be made or
    removed; the message says what stays), ``RuntimeUnavailable``.
    """

    async def open(self, network: str) -> None: ...

    async def close(self) -> None: ...
