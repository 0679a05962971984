"""What an in-memory vantage6 server stores: one state that several nodes' ``MemoryServerApi`` can share."""
from __future__ import annotations

import itertools
from datetime import datetime

from attrs import define, field

from v6node.domain.model import Collaboration, Organization, RunUpdate, TaskRef
from v6node.domain.status import RunStatus


@define
class StoredRun:
    """A run as the server stores it (``result`` and ``log`` included)."""

    id: int
    task_id: int
    organization_id: int
    input: str
    status: RunStatus = RunStatus.PENDING
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: str | None = None
    log: str | None = None
    blob_storage_used: bool = False
    assigned_at: datetime | None = None
    patches: list[RunUpdate] = field(factory=list)


class MemoryServerState:
    """The server's database: organizations, collaborations, tasks, runs, algorithm stores, blobs.

    One ``MemoryServerApi`` is one node's view of it (its identity, its tokens, its calls);
    hand the same state to several of them and they are nodes of one server, as in a
    federation. Task and run ids come from one sequence, as the server's tables do not
    overlap in the tests' eyes.
    """

    def __init__(self) -> None:
        self.organizations: dict[int, Organization] = {}
        self.collaborations: dict[int, Collaboration] = {}
        self.tasks: dict[int, TaskRef] = {}
        self.runs: dict[int, StoredRun] = {}
        self.algorithm_stores: dict[int, str] = {}
        self.blobs: dict[str, bytes] = {}
        self._ids = itertools.count(1)

    def new_id(self) -> int:
        return next(self._ids)

    def runs_of(self, task_id: int) -> list[StoredRun]:
        return [run for run in self.runs.values() if run.task_id == task_id]

    def task_status(self, task_id: int) -> str:
        """Derived from the task's runs, as the server derives it."""
        statuses = [run.status for run in self.runs_of(task_id)]
        failed = {status for status in statuses if status.has_failed}
        if failed:
            return failed.pop() if len(failed) == 1 else RunStatus.FAILED.value
        for status in (RunStatus.ACTIVE, RunStatus.INITIALIZING, RunStatus.PENDING):
            if status in statuses:
                return status.value
        return RunStatus.COMPLETED.value
