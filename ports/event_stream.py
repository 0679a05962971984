"""The server's websocket (Socket.IO namespace /tasks) as a stream of domain events."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from v6node.domain.events import NodeEvent


@runtime_checkable
class EventStream(Protocol):
    """Connects with the token of its token provider, asked again at every reconnect.

    ``events()`` yields ``Connected`` after each (re)connect, ``Disconnected`` when the
    connection drops, and the server's events in between. It reconnects by itself with
    backoff and never ends until ``close()``; cancellation of the consumer stops it.
    ``emit`` raises ``NotConnected`` while the connection is down (the caller decides
    whether the event matters).
    """

    @property
    def connected(self) -> bool:
        """Whether the namespace is connected right now."""

    def events(self) -> AsyncIterator[NodeEvent]: ...

    async def emit(self, event: str, data: Any = None, *, handled: bool = False) -> None:
        """Send ``event`` to the server; NotConnected when there is no connection.

        ``handled``: return only once the server has handled it (its acknowledgement), so
        what the node does next cannot overtake it; NotConnected when the connection ends
        first. The caller bounds the wait."""

    async def reconnect(self) -> None:
        """Drop the current connection; the stream reconnects with a fresh token."""

    async def close(self) -> None:
        """Disconnect for good; ``events()`` ends."""
