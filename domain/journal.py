"""What the node remembers about each run it received, step by step."""
from __future__ import annotations

import hashlib
from datetime import datetime
from enum import IntEnum
from typing import Any
from urllib.parse import urlsplit

from attrs import evolve, field, frozen

from v6node.domain.errors import JournalError
from v6node.domain.model import Run
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
    # The server's creation time of the run: with the task and job ids it tells this run
    # from another server's run that has the same id (a reset or re-installed server).
    assigned_at: datetime | None = field(default=None, validator=_aware)
    # Set by the journal that stores the entry, from its own clock.
    received_at: datetime | None = field(default=None, validator=_aware)
    updated_at: datetime | None = field(default=None, validator=_aware)
    # When a container was first started for the run: time limits count from here.
    started_at: datetime | None = field(default=None, validator=_aware)

    def advance(self, step: RunStep, **changes: Any) -> JournalEntry:
        """The entry at ``step`` (the same step again is allowed); ``StepBackwards`` otherwise."""
        if step < self.step:
            raise StepBackwards(f"run {self.run_id} cannot go back from {self.step.name} to {step.name}")
        starts = self.container_starts + (1 if step is RunStep.STARTED else 0)
        if step is RunStep.STARTED and self.started_at is None:
            changes.setdefault("started_at", changes.get("updated_at"))
        return evolve(self, step=step, container_starts=starts, **changes)


def stale_because(entry: JournalEntry, run: Run) -> str | None:
    """Why ``entry`` describes another run than the server's ``run`` of the same id, or None.

    Ids repeat when a server is reset or re-installed; the task, the job and the run's
    creation time do not all repeat.
    """
    task = run.task
    if entry.task_id != task.id:
        return f"the journal has run {run.id} in task {entry.task_id}, the server in task {task.id}"
    if entry.job_id is not None and task.job_id is not None and entry.job_id != task.job_id:
        return f"the journal has run {run.id} in job {entry.job_id}, the server in job {task.job_id}"
    if entry.assigned_at is not None and run.assigned_at is not None and entry.assigned_at != run.assigned_at:
        return (
            f"the journal has run {run.id} created at {entry.assigned_at.isoformat()}, the server at "
            f"{run.assigned_at.isoformat()}"
        )
    return None


@frozen
class JournalIdentity:
    """Whom a journal was written for: its records mean nothing to another server or node."""

    server: str  # normalised API base: scheme://host:port/api-path
    node_id: int
    organization_id: int
    collaboration_id: int

    @classmethod
    def of(cls, api_base: str, node_id: int, organization_id: int, collaboration_id: int) -> JournalIdentity:
        return cls(normalised_server(api_base), node_id, organization_id, collaboration_id)

    def describe(self) -> str:
        return (
            f"node {self.node_id} of organization {self.organization_id} in collaboration "
            f"{self.collaboration_id} at {self.server}"
        )

    @property
    def fingerprint(self) -> str:
        """A short stable tag of the identity, for container labels."""
        text = f"{self.server}|{self.node_id}|{self.organization_id}|{self.collaboration_id}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def normalised_server(api_base: str) -> str:
    """``HTTP://Host/api/`` -> ``http://host:80/api``: one spelling per server."""
    parts = urlsplit(api_base)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}{parts.path.rstrip('/')}"


@frozen
class JournalBinding:
    """What binding a journal to an identity found.

    ``previous``: the identity the journal was written for (None: a new journal, or one
    from before identities were recorded); ``set_aside``: where a journal of another
    identity was moved, None when it was kept.
    """

    previous: JournalIdentity | None = None
    set_aside: str | None = None
    entries_set_aside: int = 0
