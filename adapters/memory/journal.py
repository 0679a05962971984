"""In-memory run journal (forgets everything when the process ends)."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timezone

from v6node.domain.errors import JournalError
from v6node.domain.journal import JournalBinding, JournalEntry, JournalIdentity, RunStep
from v6node.domain.status import RunStatus
from v6node.ports.run_journal import RunJournal


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class MemoryRunJournal(RunJournal):
    """Test-side: ``set_aside`` holds (identity, entries) of each journal moved aside."""

    def __init__(self, *, now: Callable[[], datetime] = _utc_now) -> None:
        self._now = now
        self._entries: dict[int, JournalEntry] = {}
        self.identity: JournalIdentity | None = None
        self.set_aside: list[tuple[JournalIdentity | None, list[JournalEntry]]] = []

    async def bind(self, identity: JournalIdentity) -> JournalBinding:
        recorded = self.identity
        if recorded == identity:
            return JournalBinding(previous=identity)
        self.identity = identity
        if recorded is None and not self._entries:
            return JournalBinding()
        entries = sorted(self._entries.values(), key=lambda e: e.run_id)
        self.set_aside.append((recorded, entries))
        self._entries = {}
        return JournalBinding(previous=recorded, set_aside=f"memory #{len(self.set_aside)}", entries_set_aside=len(entries))

    async def claim(
        self, run_id: int, task_id: int, *, job_id: int | None = None, assigned_at: datetime | None = None
    ) -> bool:
        if run_id in self._entries:
            return False
        at = self._now()
        self._entries[run_id] = JournalEntry(
            run_id=run_id, task_id=task_id, job_id=job_id, assigned_at=assigned_at, received_at=at, updated_at=at
        )
        return True

    async def advance(
        self,
        run_id: int,
        step: RunStep,
        *,
        container_id: str | None = None,
        exit_code: int | None = None,
        status: RunStatus | None = None,
        token: str | None = None,
    ) -> JournalEntry:
        entry = self._entries.get(run_id)
        if entry is None:
            raise JournalError(f"run {run_id} was never claimed")
        given = {"container_id": container_id, "exit_code": exit_code, "status": status, "token": token}
        changes = {key: value for key, value in given.items() if value is not None}
        self._entries[run_id] = entry = entry.advance(step, updated_at=self._now(), **changes)
        return entry

    async def get(self, run_id: int) -> JournalEntry | None:
        return self._entries.get(run_id)

    async def entries(self) -> list[JournalEntry]:
        return sorted(self._entries.values(), key=lambda e: e.run_id)

    async def entries_for_sync(self, run_ids: Iterable[int], updated_before: datetime | None) -> list[JournalEntry]:
        wanted = frozenset(run_ids)
        return [
            entry for entry in await self.entries()
            if updated_before is None or entry.run_id in wanted
            or entry.updated_at is None or entry.updated_at < updated_before
        ]

    async def count(self) -> int:
        return len(self._entries)

    async def forget(self, run_id: int) -> None:
        self._entries.pop(run_id, None)

    def close(self) -> None:
        """Nothing to release; here so the memory and the SQLite journal are wired alike."""
