"""The runs this node is executing right now: their container, token, kill and report marks."""
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
    """The one owner of ``ActiveRun`` state: the executor registers containers and tokens,
    the kill handler marks kills, the reporter marks reports; everyone else reads."""

    def __init__(self) -> None:
        self._runs: dict[int, ActiveRun] = {}
        self._killed_early: set[int] = set()
        self._interrupted: list[ActiveRun] = []

    def add(self, run: Run) -> ActiveRun:
        active = ActiveRun(run, killed=run.id in self._killed_early)
        self._killed_early.discard(run.id)
        self._runs[run.id] = active
        return active

    def get(self, run_id: int) -> ActiveRun | None:
        return self._runs.get(run_id)

    def discard(self, run_id: int) -> None:
        self._runs.pop(run_id, None)

    def started(self, run_id: int, container_id: str) -> None:
        if (active := self._runs.get(run_id)) is not None:
            active.container_id = container_id

    def authorized(self, run_id: int, token: str) -> None:
        if (active := self._runs.get(run_id)) is not None:
            active.token = token

    def reported(self, run_id: int) -> None:
        if (active := self._runs.get(run_id)) is not None:
            active.reported = True

    def killed(self, run_id: int) -> bool:
        active = self._runs.get(run_id)
        return active is not None and active.killed

    def mark_killed(self, run_id: int) -> ActiveRun | None:
        """Mark a run killed; a run not seen yet is remembered so it never starts."""
        active = self._runs.get(run_id)
        if active is None:
            self._killed_early.add(run_id)
            return None
        active.killed = True
        return active

    def interrupt(self, run_id: int) -> None:
        """The node stopped while this run's algorithm ran: it is reported at the clean-up."""
        active = self._runs.get(run_id)
        if active is not None and active.container_id is not None and not active.reported:
            self._interrupted.append(active)

    def take_interrupted(self) -> list[ActiveRun]:
        taken, self._interrupted = self._interrupted, []
        return taken

    def all(self) -> list[ActiveRun]:
        return list(self._runs.values())

    def __len__(self) -> int:
        return len(self._runs)
