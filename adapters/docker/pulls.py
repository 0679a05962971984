"""Progress of an image pull, logged now and then instead of per engine message.

A pull of a large algorithm image can take minutes; the operator sees one line
when it starts, a progress line at most every ``interval`` seconds (layers done,
bytes downloaded of those known) and one line when it ends.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MAX_LAYERS = 1000
_DONE = {"Pull complete", "Already exists"}


class PullProgress:
    def __init__(self, image: str, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.image = image
        self._interval = interval
        self._clock = clock
        self._started = clock()
        self._last_report = self._started
        self._layers: dict[str, tuple[int, int]] = {}
        self._done: set[str] = set()

    def update(self, message: dict[str, Any]) -> None:
        layer = message.get("id")
        if not isinstance(layer, str) or (layer not in self._layers and len(self._layers) >= MAX_LAYERS):
            return
        detail = message.get("progressDetail") or {}
        current, total = self._layers.get(layer, (0, 0))
        if message.get("status") == "Downloading" and isinstance(detail, dict):
            current = _count(detail.get("current"), current)
            total = _count(detail.get("total"), total)
        if message.get("status") in _DONE:
            self._done.add(layer)
            current = total
        self._layers[layer] = (current, total)
        now = self._clock()
        if now - self._last_report >= self._interval:
            self._last_report = now
            log.info("pulling %s: %s", self.image, self.summary())

    def summary(self) -> str:
        downloaded = sum(current for current, _ in self._layers.values())
        known = sum(total for _, total in self._layers.values())
        size = f", {_mib(downloaded)} of {_mib(known)} MiB" if known else ""
        return f"{len(self._done)}/{len(self._layers)} layers done{size}, {self.elapsed():.0f} s"

    def elapsed(self) -> float:
        return self._clock() - self._started


def _count(value: object, default: int) -> int:
    return value if isinstance(value, int) and value >= 0 else default


def _mib(count: int) -> str:
    return f"{count / 2**20:.0f}"
