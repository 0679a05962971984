"""A proxy that only pretends to listen."""
from __future__ import annotations


class MemoryProxyServer:
    def __init__(self, port: int = 8080) -> None:
        self.port = port
        self.host: str | None = None
        self.running = False

    async def start(self, host: str) -> int:
        self.host = host
        self.running = True
        return self.port

    async def stop(self) -> None:
        self.running = False
