"""The runs this process holds (queued or executing), and requests for a sync."""
from __future__ import annotations

import asyncio

from v6node.app.run_events import RunEvents
from v6node.domain.model import Run
from v6node.domain.reconcile import RunAction
from v6node.domain.run_events import Stage


class RunQueue:
    """Shared by the use cases that queue runs and the node's executors.

    ``lock`` orders the two ways runs arrive (a sync and ``new_task``), so that what one
    decides the other sees. A run is held from ``put`` until ``done``.
    """

    def __init__(self, events: RunEvents) -> None:
        self._events = events
        self._queue: asyncio.Queue[tuple[Run, RunAction | None]] = asyncio.Queue()
        self._held: dict[int, int | None] = {}  # run id -> job id
        self._sync_wanted = asyncio.Event()
        self.lock = asyncio.Lock()

    def put(self, run: Run, action: RunAction | None = None) -> None:
        self._held[run.id] = run.task.job_id
        self._queue.put_nowait((run, action))
        self._events.publish(Stage.RECEIVED, run, detail=str(action.kind) if action is not None else "new")

    async def get(self) -> tuple[Run, RunAction | None]:
        return await self._queue.get()

    def done(self, run_id: int) -> None:
        self._held.pop(run_id, None)

    def holds(self, run_id: int) -> bool:
        return run_id in self._held

    def held(self) -> set[int]:
        return set(self._held)

    def jobs(self) -> set[int]:
        """Jobs with a run held here (their temporary volume is in use)."""
        return {job for job in self._held.values() if job is not None}

    def ask_for_sync(self) -> None:
        """Ask the node's sync loop for a sync; asks made while one runs collapse into one more."""
        self._sync_wanted.set()

    async def wait_for_sync_request(self) -> None:
        await self._sync_wanted.wait()
        self._sync_wanted.clear()
