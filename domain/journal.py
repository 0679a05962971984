"""What the node remembers about each run it received, step by step."""
from __future__ import annotations

from datetime import datetime
from enum import IntEnum
from typing import Any

from attrs import evolve, field, frozen

from v6node.domain.errors import JournalError
from v6node.domain.status import RunStatus


class RunStep(IntEnum):
    """Steps in the order they happen; a run only moves forward."""

    RECEIVED = 1
    STARTED = 2
    EXITED = 3
    REPORTED = 4


class StepBackwards(JournalError, ValueError):
    """A journal entry was asked to move to an earlier step than the one it records."""


def _aware(_instance: object, attribute: Any, value: datetime | None) -> None:
    if value is not None and value.tzinfo is None:
        raise ValueError(f"{attribute.name} must be timezone-aware, got {value!r}")


@frozen
class JournalEntry:
    run_id: int
    task_id: int
    step: RunStep = RunStep.RECEIVED
    container_id: str | None = None
    exit_code: int | None = None
    # The status the node reported (set with REPORTED; None when nothing was reported).
    status: RunStatus | None = None
    # How often a container was started for this run; more than one is a bug.
    container_starts: int = 0
    job_id: int | None = None
    # The run's container token, so a re-attached run can be authorized at the proxy again.
    token: str | None = field(default=None, repr=False)
    # Set by the journal that stores the entry, from its own clock.
    received_at: datetime | None = field(default=None, validator=_aware)
    updated_at: datetime | None = field(default=None, validator=_aware)

    def advance(self, step: RunStep, **changes: Any) -> JournalEntry:
        """The entry at ``step`` (the same step again is allowed); ``StepBackwards`` otherwise."""
        if step < self.step:
            raise StepBackwards(f"run {self.run_id} cannot go back from {self.step.name} to {step.name}")
        starts = self.container_starts + (1 if step is RunStep.STARTED else 0)
        return evolve(self, step=step, container_starts=starts, **changes)
