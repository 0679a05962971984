"""What a local run of an algorithm image ended with, as the server holds it and a researcher reads it."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from attrs import frozen

from v6node.domain.status import RunStatus


@frozen
class RunReport:
    """One organization's run of a task as the server stores it, its result decrypted (or
    decoded) the way the task's researcher reads it. ``result`` is None when the run
    stored none; ``result_error`` says why a stored result could not be read."""

    run_id: int
    task_id: int
    organization_id: int
    status: RunStatus
    log: str | None
    result: bytes | None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result_error: str = ""

    def result_json(self) -> Any:
        """The result as JSON (what the vantage6 wrapper writes); ``ValueError`` when it is not."""
        if self.result is None:
            raise ValueError(f"run {self.run_id} has no result")
        return json.loads(self.result)


@frozen
class TaskReport:
    """A task and its runs; ``status`` is the server's (derived from the runs)."""

    task_id: int
    name: str
    image: str
    status: str
    runs: tuple[RunReport, ...]
    parent_id: int | None = None


@frozen
class LocalRunReport:
    """The task the researcher created, every sub-task its algorithm created (in order), and
    the names of the nodes that ran them (one per organization; Docker labels carry them),
    and the work folder when it was kept."""

    task: TaskReport
    subtasks: tuple[TaskReport, ...] = ()
    nodes: tuple[str, ...] = ()
    work_folder: str | None = None

    @property
    def status(self) -> str:
        return self.task.status

    @property
    def completed(self) -> bool:
        return all(run.status is RunStatus.COMPLETED for run in self.task.runs)
