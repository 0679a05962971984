"""The node's local HTTP endpoint: ``/health`` and ``/metrics``."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from attrs import field, frozen


@frozen
class Health:
    """``ok`` when every part is; ``parts`` names each checked part and what was found."""

    ok: bool
    parts: dict[str, str] = field(factory=dict, hash=False)


@runtime_checkable
class MonitoringServer(Protocol):
    """Serves ``GET /health`` (200 with the parts when healthy, 503 otherwise) and
    ``GET /metrics`` (``NodeMetrics.exposition``, after ``refresh``). ``start`` raises
    ``NodeError`` when it cannot listen."""

    async def start(
        self, host: str, port: int, health: Callable[[], Awaitable[Health]], refresh: Callable[[], Awaitable[None]]
    ) -> int:
        """Listen; returns the port (``port`` 0: any free one)."""

    async def stop(self) -> None: ...
