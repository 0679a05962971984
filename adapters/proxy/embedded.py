"""uvicorn inside the node's own event loop (the algorithm proxy, the monitoring endpoint)."""
from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import formatdate

import uvicorn
import uvicorn.server

__all__ = ["EmbeddedServer", "listen_socket"]


class _FreshDateState(uvicorn.server.ServerState):
    """uvicorn's shared state whose ``default_headers`` carry the current ``Date``, made when
    a request asks for them (once a second at most) instead of by a timer."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__()
        self._config = config
        self._second = -1
        self._headers: list[tuple[bytes, bytes]] = []

    @property  # type: ignore[override]
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        now = int(time.time())
        if now != self._second:
            date = [(b"date", formatdate(now, usegmt=True).encode())] if self._config.date_header else []
            self._headers = date + self._config.encoded_headers
            self._second = now
        return self._headers

    @default_headers.setter
    def default_headers(self, _value: list[tuple[bytes, bytes]]) -> None:
        pass  # uvicorn's timer sets them; here they are made when asked for


class EmbeddedServer(uvicorn.Server):
    """uvicorn as a task of someone else's event loop: says when it listens, leaves signals
    alone, and sleeps while idle.

    uvicorn's own main loop wakes every 0.1 s to see whether it should exit and to refresh
    the ``Date`` header: ten wake-ups a second of an idle node, per server. Here it waits
    until ``should_exit`` is set, and the header is made when a response needs it.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        self._exit = asyncio.Event()
        super().__init__(config)
        self.server_state = _FreshDateState(config)
        self.ready = asyncio.Event()

    @property  # type: ignore[override]
    def should_exit(self) -> bool:
        return self._exit.is_set()

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if value:
            self._exit.set()
        else:
            self._exit.clear()

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The node's entry point owns SIGINT/SIGTERM; it stops the proxy through stop().
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()

    async def main_loop(self) -> None:
        await self._exit.wait()


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening socket, bound here so a bind error is raised to start() and port 0 is resolved."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=128)
