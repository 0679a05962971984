"""How long to wait before trying again: one exponential backoff for every loop and retry."""
from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from attrs import field, frozen, validators


@frozen
class Backoff:
    """``first``, ``first * factor``, ... capped at ``maximum``; each delay shortened by up to
    ``jitter`` of itself (0: never; 0.5: down to half) so that many nodes do not retry in step."""

    first: float = field(default=1.0, validator=validators.gt(0))
    maximum: float = field(default=30.0, validator=validators.gt(0))
    factor: float = field(default=2.0, validator=validators.ge(1))
    jitter: float = field(default=0.0, validator=[validators.ge(0), validators.le(1)])

    def delay(self, failures: int, draw: Callable[[], float] = random.random) -> float:
        """The wait after ``failures`` failures in a row (0: after the first one)."""
        plain = min(self.maximum, self.first * self.factor ** min(failures, 64))
        return plain * (1 - self.jitter * draw()) if self.jitter else plain

    def delays(self) -> Iterator[float]:
        """The waits after the first, second, ... failure; endless."""
        failures = 0
        while True:
            yield self.delay(failures)
            failures += 1
