"""Run lifecycle events, published by the use cases to whoever subscribed (never blocking the node)."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence

from v6node.domain.model import Run
from v6node.domain.run_events import RunEvent, Stage
from v6node.domain.status import RunStatus
from v6node.ports.clock import Clock

log = logging.getLogger("v6node.node")


class RunEventStream:
    """One subscriber's events, in order. Bounded: a subscriber that stops reading loses the
    oldest events (counted in ``dropped``) instead of growing the node's memory."""

    def __init__(self, owner: RunEvents, limit: int) -> None:
        self._owner = owner
        self._queue: asyncio.Queue[RunEvent | None] = asyncio.Queue(maxsize=limit)
        self.dropped = 0

    def _offer(self, event: RunEvent | None) -> None:
        while True:
            try:
                self._queue.put_nowait(event)
                return
            except asyncio.QueueFull:
                self._queue.get_nowait()
                self.dropped += 1

    def __aiter__(self) -> AsyncIterator[RunEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[RunEvent]:
        while (event := await self._queue.get()) is not None:
            yield event

    def close(self) -> None:
        """End the iteration (after the events already queued)."""
        self._owner.unsubscribe(self)
        self._offer(None)


class RunEvents:
    """The publisher: ``subscribe()`` for a stream of ``RunEvent``; the use cases publish."""

    def __init__(self, clock: Clock, listeners: Sequence[Callable[[RunEvent], None]] = ()) -> None:
        self.clock = clock
        self._listeners = list(listeners)  # called at once, in the publisher's step (metrics)
        self._subscribers: list[RunEventStream] = []

    def subscribe(self, limit: int = 1000) -> RunEventStream:
        stream = RunEventStream(self, limit)
        self._subscribers.append(stream)
        return stream

    def unsubscribe(self, stream: RunEventStream) -> None:
        if stream in self._subscribers:
            self._subscribers.remove(stream)

    def publish(self, stage: Stage, run: Run, status: RunStatus | None = None, detail: str = "") -> None:
        event = RunEvent(stage, run.id, run.task.id, run.task.image, self.clock.now(), status, detail)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a listener must never break a run
                log.exception("a run event listener failed")
        for stream in self._subscribers:
            stream._offer(event)  # noqa: SLF001 - the publisher feeds its own streams

    def close(self) -> None:
        """The node stopped: every stream ends."""
        for stream in list(self._subscribers):
            stream.close()
