"""A loopback TCP relay between a node and the server that a test can cut on demand.

Point the node's ``server_url``/``port`` at ``relay.port``; every REST call and the
websocket then pass through it. ``cut()`` breaks every open connection at once (RST) and
refuses new ones until ``restore()``; ``silence_websockets()`` keeps the websocket's TCP
connection open but forwards nothing more in either direction: a socket that died
silently, which neither side notices until its own ping timeout.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from attrs import define

T = TypeVar("T")

_WEBSOCKET_PATH = b"/socket.io/"


@define(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    websocket: bool = False
    silenced: bool = False

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()


class TcpRelay:
    """Forwards ``127.0.0.1:<port>`` to ``target_host:target_port`` on a thread of its own."""

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target = (target_host, target_port)
        self.port = 0
        self.refused = 0  # connections refused while cut
        self.websockets_seen = 0
        self._refusing = False
        self._links: set[_Link] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-relay", daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> TcpRelay:
        self._thread.start()
        self._server = self._do(self._listen())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def cut(self) -> int:
        """Break every connection now and refuse new ones; returns how many were broken."""
        return self._do(self._cut())

    def restore(self) -> None:
        self._do(self._restore())

    def silence_websockets(self) -> int:
        """Stop forwarding on the open websocket connections (TCP stays up); returns how many."""
        return self._do(self._silence())

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._do(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> TcpRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- on the relay's thread -----------------------------------------------------------
    def _do(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._accept, self.host, 0)

    async def _cut(self) -> int:
        self._refusing = True
        links = list(self._links)
        for link in links:
            link.abort()
        self._links.clear()
        return len(links)

    async def _restore(self) -> None:
        self._refusing = False

    async def _silence(self) -> int:
        silenced = 0
        for link in self._links:
            if link.websocket and not link.silenced:
                link.silenced = True
                silenced += 1
        return silenced

    async def _shutdown(self) -> None:
        await self._cut()
        if self._server is not None:
            self._server.close()
        pumps = list(self._pumps)
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        for pump in (self._pump(reader, up_writer, link, first=True), self._pump(up_reader, writer, link)):
            task = asyncio.create_task(pump)
            self._pumps.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._pumps.discard)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: _Link, first: bool = False
    ) -> None:
        try:
            while True:
                data = await source.read(65536)
                if not data:
                    break
                if first:
                    first = False
                    # The first request line says whether this connection is the websocket.
                    if _WEBSOCKET_PATH in data.split(b"\r\n", 1)[0]:
                        link.websocket = True
                        self.websockets_seen += 1
                if link.silenced:
                    continue
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # A silenced link stays open (and listed) until cut: that is the point of it.
            if not link.silenced and link in self._links:
                self._links.discard(link)
                for writer in (link.client, link.upstream):
                    writer.close()
