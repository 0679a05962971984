"""A small time-bounded cache for server facts that rarely change (public keys, blob store)."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from v6node.ports.clock import Clock

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

log = logging.getLogger("v6node.cache")


class TimedCache(Generic[K, V]):
    """Values are fetched again once ``ttl`` seconds old; a changed value is logged."""

    def __init__(self, clock: Clock, ttl: float, what: str) -> None:
        self._clock = clock
        self._ttl = ttl
        self._what = what
        self._values: dict[K, tuple[float, V]] = {}

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        now = self._clock.monotonic()
        cached = self._values.get(key)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        value = await load()
        if cached is not None and cached[1] != value:
            log.info("%s of %s changed on the server", self._what, key)
        self._values[key] = (now, value)
        return value

    def forget(self, key: K) -> None:
        self._values.pop(key, None)
