"""Use case: stop the algorithms a ``kill_containers`` order targets on this node."""
from __future__ import annotations

import contextlib
import logging

from v6node.app.active_runs import ActiveRuns
from v6node.app.session import NodeSession
from v6node.domain.errors import NodeError
from v6node.domain.kill import KilledRun, KillOrder
from v6node.ports.container_runtime import ContainerRuntime

log = logging.getLogger("v6node.node")


class ApplyKillOrder:
    """Kill what ``order`` targets here; returns the runs killed.

    Business rules:
    - orders for another collaboration or another node change nothing;
    - a task kill targets exactly our organization's listed runs (an empty list kills
      nothing, unlike the reference); a node-wide kill targets every run executing here;
    - a run not executing yet is marked so that it never starts; the executor reports a
      killed run ``killed by user``.
    """

    def __init__(self, runtime: ContainerRuntime, session: NodeSession, active: ActiveRuns) -> None:
        self.runtime = runtime
        self.session = session
        self.active = active

    async def __call__(self, order: KillOrder) -> list[KilledRun]:
        me = self.session.me()
        if order.collaboration_id not in (None, me.collaboration_id):
            return []
        if order.node_id is not None and order.node_id != me.node_id:
            return []
        if order.node_wide:
            targets = [a.run.id for a in self.active.all()]
        else:
            targets = [t.run_id for t in order.targets if t.organization_id == me.organization_id]
        killed = []
        for run_id in targets:
            active = self.active.mark_killed(run_id)
            if active is None:
                log.info("kill order for run %s, which is not running here", run_id)
                continue
            if active.container_id is not None:
                with contextlib.suppress(NodeError):
                    await self.runtime.kill(active.container_id)
            killed.append(KilledRun(run_id, active.run.task.id, active.run.task.parent_id))
            log.info("killed run %s of task %s", run_id, active.run.task.id)
        return killed
