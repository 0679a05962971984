"""Kill orders from the server (``kill_containers``) as value objects."""
from __future__ import annotations

from attrs import frozen


@frozen
class KillTarget:
    run_id: int
    task_id: int
    organization_id: int


@frozen
class KillOrder:
    """A task kill lists its targets; a node-wide kill names the node and lists none."""

    collaboration_id: int | None
    node_id: int | None = None
    targets: tuple[KillTarget, ...] = ()

    @property
    def node_wide(self) -> bool:
        return not self.targets


@frozen
class KilledRun:
    """What a kill returns per run, like the reference's ``KilledRun`` tuple."""

    run_id: int
    task_id: int
    parent_id: int | None
