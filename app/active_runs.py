"""The runs this node is executing right now, and kill marks on them."""
from __future__ import annotations

from attrs import define

from v6node.domain.model import Run


@define
class ActiveRun:
    run: Run
    container_id: str | None = None
    token: str | None = None
    killed: bool = False
    # Its end is on the server: a stop after this point interrupts only the clean-up.
    reported: bool = False


class ActiveRuns:
    """Shared by the run executor (registers containers) and the kill handler (marks kills)."""

    def __init__(self) -> None:
        self._runs: dict[int, ActiveRun] = {}
        self._killed_early: set[int] = set()

    def add(self, run: Run) -> ActiveRun:
        active = ActiveRun(run, killed=run.id in self._killed_early)
        self._killed_early.discard(run.id)
        self._runs[run.id] = active
        return active

    def get(self, run_id: int) -> ActiveRun | None:
        return self._runs.get(run_id)

    def discard(self, run_id: int) -> None:
        self._runs.pop(run_id, None)

    def mark_killed(self, run_id: int) -> ActiveRun | None:
        """Mark a run killed; a run not seen yet is remembered so it never starts."""
        active = self._runs.get(run_id)
        if active is None:
            self._killed_early.add(run_id)
            return None
        active.killed = True
        return active

    def all(self) -> list[ActiveRun]:
        return list(self._runs.values())

    def __len__(self) -> int:
        return len(self._runs)
