"""In-memory run journal (forgets everything when the process ends)."""
from __future__ import annotations

from v6node.domain.errors import JournalError
from v6node.domain.journal import JournalEntry, RunStep
from v6node.domain.status import RunStatus


class MemoryRunJournal:
    def __init__(self) -> None:
        self._entries: dict[int, JournalEntry] = {}

    async def claim(self, run_id: int, task_id: int) -> bool:
        if run_id in self._entries:
            return False
        self._entries[run_id] = JournalEntry(run_id=run_id, task_id=task_id)
        return True

    async def advance(
        self,
        run_id: int,
        step: RunStep,
        *,
        container_id: str | None = None,
        exit_code: int | None = None,
        status: RunStatus | None = None,
    ) -> JournalEntry:
        entry = self._entries.get(run_id)
        if entry is None:
            raise JournalError(f"run {run_id} was never claimed")
        changes = {
            key: value
            for key, value in (("container_id", container_id), ("exit_code", exit_code), ("status", status))
            if value is not None
        }
        self._entries[run_id] = entry = entry.advance(step, **changes)
        return entry

    async def get(self, run_id: int) -> JournalEntry | None:
        return self._entries.get(run_id)

    async def entries(self) -> list[JournalEntry]:
        return sorted(self._entries.values(), key=lambda e: e.run_id)
