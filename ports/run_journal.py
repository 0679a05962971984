"""The node's own record of each run's progress."""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Protocol, runtime_checkable

from v6node.domain.journal import JournalBinding, JournalEntry, JournalIdentity, RunStep
from v6node.domain.status import RunStatus


@runtime_checkable
class RunJournal(Protocol):
    """Written before and after each step of a run; read back by reconciliation.

    Errors: ``JournalError`` (the store cannot be opened, read or written; it names the
    store); ``StepBackwards`` (a ``JournalError`` and a ``ValueError``) when a step would go
    back. A durable journal has the change on disk when a call returns. A call that is
    cancelled may still have been applied: read the entry back when that matters.
    """

    async def bind(self, identity: JournalIdentity) -> JournalBinding:
        """Make this the journal of ``identity`` (the server and node just logged in as).

        A journal written for another identity, or one with entries and no identity (older
        versions), is set aside whole (kept, never deleted) and a fresh one is used: its
        records say nothing about this server's runs. Call before any other method.
        """

    async def claim(
        self, run_id: int, task_id: int, *, job_id: int | None = None, assigned_at: datetime | None = None
    ) -> bool:
        """Record that the run was received; False when it already was (never run it twice).

        Atomic: of any number of concurrent claims of one run, exactly one returns True.
        ``assigned_at`` is the server's creation time of the run (see ``stale_because``).
        """

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
        """Move a claimed run to ``step`` (or record more at its current step).

        Fields given as None keep their value. ``STARTED`` counts a container start each
        time it is recorded, and the first one sets ``started_at``. ``JournalError`` for a run never claimed (or forgotten).
        """

    async def get(self, run_id: int) -> JournalEntry | None:
        """The entry of one run, None when there is none."""

    async def entries(self) -> list[JournalEntry]:
        """Every entry, by run id."""

    async def entries_for_sync(self, run_ids: Iterable[int], updated_before: datetime | None) -> list[JournalEntry]:
        """What a sync reads, by run id: the entries of ``run_ids`` (the runs the server lists
        open) and those last updated before ``updated_before`` (every entry when None).

        Costs O(what it returns), not O(the journal's history): a sync with thousands of
        finished runs in the journal reads only the open ones and those due to be forgotten.
        """

    async def count(self) -> int:
        """How many entries the journal holds."""

    async def forget(self, run_id: int) -> None:
        """Drop a run's entry (runs long finished on the server); idempotent."""
