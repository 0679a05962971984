"""Retrying calls whose errors say they are retryable."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from v6node.domain.backoff import Backoff
from v6node.domain.errors import NodeError
from v6node.ports.clock import Clock

T = TypeVar("T")


async def until_done(
    call: Callable[[], Awaitable[T]],
    clock: Clock,
    log: logging.Logger,
    what: str,
    maximum_delay: float = 30.0,
) -> T:
    """Repeat ``call`` while it raises a retryable ``NodeError``; other errors propagate.

    This is the one retry layer that tells the operator what the node waits for: one
    WARNING per attempt, saying for how long it has been waiting (adapters retry quietly).
    """
    started = clock.monotonic()
    for attempt, delay in enumerate(Backoff(maximum=maximum_delay).delays(), start=1):
        try:
            return await call()
        except NodeError as exc:
            if not exc.retryable:
                raise
            waited = clock.monotonic() - started
            log.warning(
                "%s failed (%s); trying again in %.0f s (attempt %d, waiting %.0f s so far)",
                what, exc, delay, attempt, waited,
            )
            await clock.sleep(delay)
    raise AssertionError("unreachable")
