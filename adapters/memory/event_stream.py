"""An EventStream in memory: tests push server events and read what the node emitted."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from v6node.domain.errors import NotConnected
from v6node.domain.events import Connected, Disconnected, NodeEvent
from v6node.ports.event_stream import EventStream

_CLOSED = object()


class MemoryEventStream(EventStream):
    """Connects when ``events()`` is first iterated, like the real stream; no server behind it.

    The test plays the server: ``push`` a ``SyncRequested`` after the ``Connected`` it
    expects, ``drop`` the connection, and assert on ``emitted``, ``reconnects`` and
    ``tokens`` (the token provider is asked at every connect, as the real stream does).
    """

    def __init__(self, token_provider: Callable[[], str] | None = None) -> None:
        self._token_provider = token_provider
        self.emitted: list[tuple[str, Any]] = []
        self.tokens: list[str] = []
        self.reconnects = 0
        self._connected = False
        self.closed = False
        self._ever_connected = False
        self._iterating = False
        self._queue: asyncio.Queue[Any] = asyncio.Queue()

    @property
    def connected(self) -> bool:
        return self._connected

    async def events(self) -> AsyncIterator[NodeEvent]:
        if self.closed:
            return
        self._iterating = True
        # The first event is always Connected; what the test pushed early comes after it.
        early = [self._queue.get_nowait() for _ in range(self._queue.qsize())]
        self._connect()
        for item in early:
            if not isinstance(item, Connected | Disconnected) and item is not _CLOSED:
                self._queue.put_nowait(item)
        try:
            while True:
                item = await self._queue.get()
                if item is _CLOSED or self.closed:
                    return
                yield item
        finally:
            # Leaving the iteration disconnects, as it does for the real stream.
            self._connected = False
            self._iterating = False

    def push(self, event: NodeEvent) -> None:
        """Deliver an event as if the server had sent it."""
        self._queue.put_nowait(event)

    def drop(self, reason: str = "connection lost", *, reconnect: bool = True) -> None:
        """Simulate a dropped connection; without ``reconnect`` it stays down until ``reconnect()``."""
        if not self._connected:
            return
        self._connected = False
        self._queue.put_nowait(Disconnected(reason))
        if reconnect:
            self._connect()

    async def emit(self, event: str, data: Any = None, *, handled: bool = False) -> None:
        if not self._connected:
            raise NotConnected(f"cannot emit {event!r}: not connected")
        self.emitted.append((event, data))

    async def reconnect(self) -> None:
        self.reconnects += 1
        if self._connected:
            self.drop("reconnect requested")
        elif self._iterating and not self.closed:
            self._connect()

    async def close(self) -> None:
        self.closed = True
        self._connected = False
        self._queue.put_nowait(_CLOSED)

    def _connect(self) -> None:
        if self._token_provider is not None:
            self.tokens.append(self._token_provider())
        self._connected = True
        self._queue.put_nowait(Connected(reconnect=self._ever_connected))
        self._ever_connected = True
