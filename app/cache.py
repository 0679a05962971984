"""A small time-bounded cache for server facts that rarely change (public keys, blob store)."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from v6node.ports.clock import Clock

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

log = logging.getLogger("v6node.cache")

# How long the node trusts what it read of the server's rarely changing facts (an
# organization's public key, whether there is a blob store): the run path and the proxy alike.
FACT_TTL = 60.0


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
        self._store(key, value, now, cached)
        return value

    def remember(self, key: K, value: V) -> None:
        """``value`` as read just now by other means (an answer seen passing by)."""
        self._store(key, value, self._clock.monotonic(), self._values.get(key))

    def _store(self, key: K, value: V, now: float, cached: tuple[float, V] | None) -> None:
        if cached is not None and cached[1] != value:
            log.info("%s of %s changed on the server", self._what, key)
        self._values[key] = (now, value)

    def forget(self, key: K) -> None:
        self._values.pop(key, None)
