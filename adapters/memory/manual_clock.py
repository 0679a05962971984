"""A clock that moves only when a test says so."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from v6node.ports.clock import Clock


class ManualClock(Clock):
    """``sleep`` waits until ``advance`` has moved time past its deadline."""

    def __init__(self, start: datetime | None = None) -> None:
        self._start = start or datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed)

    def monotonic(self) -> float:
        return self._elapsed

    @property
    def sleepers(self) -> int:
        """How many coroutines are asleep right now."""
        return sum(1 for _, fut in self._sleepers if not fut.done())

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._elapsed + seconds, fut))
        await fut

    async def advance(self, seconds: float) -> None:
        """Move time forward, wake every sleeper whose deadline passed, let them run."""
        self._elapsed += seconds
        for deadline, fut in self._sleepers:
            if deadline <= self._elapsed and not fut.done():
                fut.set_result(None)
        self._sleepers = [(d, f) for d, f in self._sleepers if not f.done()]
        for _ in range(5):
            await asyncio.sleep(0)
