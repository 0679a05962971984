"""Run status strings exactly as the vantage6 4.x server stores them, and their lifecycle."""
from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """A run's status, spelled exactly as the server stores it."""

    PENDING = "pending"
    INITIALIZING = "initializing"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    START_FAILED = "start failed"
    NON_EXISTING_IMAGE = "non-existing Docker image"
    CRASHED = "crashed"
    KILLED = "killed by user"
    NOT_ALLOWED = "not allowed"
    UNKNOWN_ERROR = "unknown error"

    @property
    def has_failed(self) -> bool:
        """The server's ``has_task_failed``: every status that is not on the happy path."""
        return self not in _NOT_FAILED

    @property
    def is_final(self) -> bool:
        """No status may follow this one."""
        return self is RunStatus.COMPLETED or self.has_failed

    def can_become(self, new: RunStatus) -> bool:
        """Whether a run in this status may move to ``new``."""
        return new in _NEXT[self]


def has_failed(status: str) -> bool:
    """Like the server: any status text off the happy path counts as failed."""
    return status not in _NOT_FAILED


def has_finished(status: str) -> bool:
    """Like the server's ``has_task_finished``: completed, or failed in any way."""
    return status == RunStatus.COMPLETED or has_failed(status)


_NOT_FAILED = frozenset(
    {RunStatus.PENDING, RunStatus.INITIALIZING, RunStatus.ACTIVE, RunStatus.COMPLETED}
)
# Failures that can happen before a container runs; everything but the
# outcomes that need a container.
_START_FAILURES = frozenset(
    {
        RunStatus.FAILED,
        RunStatus.START_FAILED,
        RunStatus.NON_EXISTING_IMAGE,
        RunStatus.NOT_ALLOWED,
        RunStatus.KILLED,
        RunStatus.UNKNOWN_ERROR,
    }
)
_RUN_OUTCOMES = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.CRASHED,
        RunStatus.FAILED,
        RunStatus.KILLED,
        RunStatus.UNKNOWN_ERROR,
    }
)
_NEXT: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: _START_FAILURES | {RunStatus.INITIALIZING, RunStatus.ACTIVE},
    RunStatus.INITIALIZING: _START_FAILURES | {RunStatus.ACTIVE},
    RunStatus.ACTIVE: _RUN_OUTCOMES,
}
for _status in RunStatus:
    _NEXT.setdefault(_status, frozenset())
