"""uvicorn inside the node's own event loop (the algorithm proxy, the monitoring endpoint)."""
from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn


class EmbeddedServer(uvicorn.Server):
    """uvicorn as a task of someone else's event loop: says when it listens, leaves signals alone."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The node's entry point owns SIGINT/SIGTERM; it stops the proxy through stop().
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening socket, bound here so a bind error is raised to start() and port 0 is resolved."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=128)
