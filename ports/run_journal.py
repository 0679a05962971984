"""The node's own record of each run's progress."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from v6node.domain.journal import JournalEntry, RunStep
from v6node.domain.status import RunStatus


@runtime_checkable
class RunJournal(Protocol):
    """Written before and after each step of a run. Raises ``JournalError``."""

    async def claim(self, run_id: int, task_id: int) -> bool:
        """Record that the run was received; False when it already was (never run it twice)."""

    async def advance(
        self,
        run_id: int,
        step: RunStep,
        *,
        container_id: str | None = None,
        exit_code: int | None = None,
        status: RunStatus | None = None,
    ) -> JournalEntry: ...

    async def get(self, run_id: int) -> JournalEntry | None: ...

    async def entries(self) -> list[JournalEntry]: ...
