"""What the node remembers about each run it received, step by step."""
from __future__ import annotations

from enum import IntEnum

from attrs import evolve, frozen

from v6node.domain.status import RunStatus


class RunStep(IntEnum):
    """Steps in the order they happen; a run only moves forward."""

    RECEIVED = 1
    STARTED = 2
    EXITED = 3
    REPORTED = 4


@frozen
class JournalEntry:
    run_id: int
    task_id: int
    step: RunStep = RunStep.RECEIVED
    container_id: str | None = None
    exit_code: int | None = None
    status: RunStatus | None = None
    # How often a container was started for this run; more than one is a bug.
    container_starts: int = 0

    def advance(self, step: RunStep, **changes: object) -> JournalEntry:
        if step < self.step:
            raise ValueError(f"run {self.run_id} cannot go back from {self.step.name} to {step.name}")
        starts = self.container_starts + (1 if step is RunStep.STARTED else 0)
        return evolve(self, step=step, container_starts=starts, **changes)
