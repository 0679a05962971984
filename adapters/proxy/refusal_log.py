"""Warnings about refused callers, rate-limited per peer so a flood of refusals cannot flood the log."""
from __future__ import annotations

import logging
from collections.abc import Callable

from attrs import define

# Beyond this many peers in the table, peers not yet in it share one entry: the table's size
# stays bounded whatever the number of addresses a flood comes from.
_MAX_PEERS = 1024
_OTHERS = "other peers"


@define
class _Window:
    opened: float
    suppressed: int = 0


class RefusalLog:
    """Logs at most one WARNING per peer per ``window`` seconds; the others are counted.

    The count of what was held back goes with the peer's next WARNING. ``monotonic`` is
    the clock (seconds that never go back).
    """

    def __init__(self, logger: logging.Logger, window: float, monotonic: Callable[[], float]) -> None:
        self._log = logger
        self._window_seconds = window
        self._monotonic = monotonic
        self._peers: dict[str, _Window] = {}

    def warn(self, peer: str | None, message: str, *args: object) -> None:
        """``message % args`` as a WARNING, unless this peer had one less than ``window`` seconds ago."""
        now = self._monotonic()
        key = self._key(peer or "unknown", now)
        window = self._peers.get(key)
        if window is not None and now - window.opened < self._window_seconds:
            window.suppressed += 1
            return
        self._peers[key] = _Window(opened=now)
        if window is not None and window.suppressed:
            message += " (%d more refusals of %s were not logged since the last warning)"
            args = (*args, window.suppressed, key)
        self._log.warning(message, *args)

    def _key(self, peer: str, now: float) -> str:
        if peer in self._peers or len(self._peers) < _MAX_PEERS:
            return peer
        # Full: forget quiet peers whose window is over (nothing of theirs is held back).
        for known, window in list(self._peers.items()):
            if not window.suppressed and now - window.opened >= self._window_seconds:
                del self._peers[known]
        return peer if len(self._peers) < _MAX_PEERS else _OTHERS
