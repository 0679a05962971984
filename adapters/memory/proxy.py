"""A proxy that only pretends to listen, and remembers which tokens it would accept."""
from __future__ import annotations

from v6node.ports.cryptor import Cryptor


class MemoryProxyServer:
    def __init__(self, port: int = 8080) -> None:
        self.port = port
        self.host: str | None = None
        self.cryptor: Cryptor | None = None
        self.running = False
        self.tokens: set[str] = set()
        self.ever_authorized: list[str] = []

    async def start(self, host: str, cryptor: Cryptor) -> int:
        self.host = host
        self.cryptor = cryptor
        self.running = True
        return self.port

    def authorize(self, container_token: str) -> None:
        self.tokens.add(container_token)
        self.ever_authorized.append(container_token)

    def revoke(self, container_token: str) -> None:
        self.tokens.discard(container_token)

    async def stop(self) -> None:
        self.running = False
