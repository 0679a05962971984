"""Holds the algorithm proxy's address until the real proxy serves it."""
from __future__ import annotations

import socket


class ReservedPortProxy:
    """Binds (without listening) a port on the given host so algorithms get a stable address.

    Connections are refused rather than left hanging, which is what an algorithm should
    see until a real proxy serves this port.
    """

    def __init__(self, port: int = 0) -> None:
        self._wanted = port
        self._socket: socket.socket | None = None

    async def start(self, host: str, cryptor: object = None) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((host, self._wanted))
        self._socket = sock
        return sock.getsockname()[1]

    def authorize(self, container_token: str) -> None:
        """Nothing is served, so nothing needs authorizing."""

    def revoke(self, container_token: str) -> None:
        """Nothing is served, so nothing needs revoking."""

    async def stop(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
