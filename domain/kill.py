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
    """A task kill lists its targets; a node-wide kill names the node and lists none.

    ``node_wide`` is explicit: a task kill whose list came out empty must kill nothing
    (the reference node treats an empty list as "kill everything").
    """

    collaboration_id: int | None
    node_id: int | None = None
    targets: tuple[KillTarget, ...] = ()
    node_wide: bool = False

    def __attrs_post_init__(self) -> None:
        if self.node_wide and self.targets:
            raise ValueError("a node-wide kill order cannot also list targets")


@frozen
class KilledRun:
    """What a kill returns per run, like the reference's ``KilledRun`` tuple."""

    run_id: int
    task_id: int
    parent_id: int | None
