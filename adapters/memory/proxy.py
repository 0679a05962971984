"""A proxy that only pretends to listen, and remembers which tokens it would accept."""
from __future__ import annotations

from v6node.domain.errors import NodeError
from v6node.ports.cryptor import Cryptor
from v6node.ports.proxy_server import ProxyServer


class MemoryProxyServer(ProxyServer):
    def __init__(self, port: int = 8080) -> None:
        self.port = port
        self.host: str | None = None
        self.cryptor: Cryptor | None = None
        self.running = False
        self.tokens: set[str] = set()
        self.taken_ports: set[int] = set()
        self.ever_authorized: list[str] = []

    async def start(self, host: str, cryptor: Cryptor, port: int | None = None) -> int:
        if port in self.taken_ports:
            raise NodeError(f"the algorithm proxy cannot listen on {host}:{port}: Address already in use")
        self.host = host
        self.cryptor = cryptor
        self.running = True
        if port:
            self.port = port
        return self.port

    def authorize(self, container_token: str) -> None:
        self.tokens.add(container_token)
        self.ever_authorized.append(container_token)

    def revoke(self, container_token: str) -> None:
        self.tokens.discard(container_token)

    async def stop(self) -> None:
        self.running = False
