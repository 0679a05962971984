"""Use case: queue the runs of a task the server just announced (``new_task``)."""
from __future__ import annotations

import logging

from v6node.app.run_queue import RunQueue
from v6node.app.session import NodeSession
from v6node.domain.journal import stale_because
from v6node.domain.model import NodeIdentity, Run
from v6node.domain.status import RunStatus
from v6node.ports.run_journal import RunJournal
from v6node.ports.server_api import ServerApi
from v6node.ports.task_workspace import TaskWorkspace

log = logging.getLogger("v6node.node")


async def claim(journal: RunJournal, run: Run) -> bool:
    """Record the run as received; False when the journal knows it already."""
    return await journal.claim(run.id, run.task.id, job_id=run.task.job_id, assigned_at=run.assigned_at)


def is_ours(me: NodeIdentity, run: Run) -> bool:
    """A run of our organization; one of another is logged (the server should never list it to us)."""
    if run.organization_id in (None, me.organization_id):
        return True
    log.info("run %s belongs to organization %s, not to ours; not run here", run.id, run.organization_id)
    return False


class QueueNewRuns:
    """Queue this node's open runs of one task (there may be none); returns how many.

    Business rules:
    - the journal's claim is what keeps a sync and ``new_task`` from starting a run twice;
    - a run that is not plainly new is never dropped in silence: one held here already, one
      the server says was started, or one the journal knows from before is logged with the
      reason and left to the reconciliation (a sync is asked for);
    - a journal record that describes another run with the same id (a reset server) is
      replaced, with a WARNING, and the run is treated as new.
    """

    def __init__(
        self, server: ServerApi, journal: RunJournal, workspace: TaskWorkspace, session: NodeSession, queue: RunQueue
    ) -> None:
        self.server = server
        self.journal = journal
        self.workspace = workspace
        self.session = session
        self.queue = queue

    async def __call__(self, task_id: int) -> int:
        runs = await self.server.list_open_runs(task_id=task_id)
        async with self.queue.lock:
            queued = 0
            for run in sorted(runs, key=lambda r: r.id):
                if await self._admit(run):
                    self.queue.put(run)
                    queued += 1
            if queued:
                log.info("queued %d new run(s)", queued)
            return queued

    async def _admit(self, run: Run) -> bool:
        if not is_ours(self.session.me(), run):
            return False
        if self.queue.holds(run.id):
            log.info("run %s is already queued or running here", run.id)
            return False
        if run.started_at is not None or run.status is not RunStatus.PENDING:
            log.info(
                "run %s was started before (status '%s'); the reconciliation decides what to do with it", run.id, run.status
            )
            self.queue.ask_for_sync()
            return False
        if await claim(self.journal, run):
            return True
        entry = await self.journal.get(run.id)
        why = stale_because(entry, run) if entry is not None else None
        if why is not None:
            log.warning("run %s: the journal's record describes another run (%s); replacing it", run.id, why)
            await self.journal.forget(run.id)
            await self.workspace.remove(run.id)
            return await claim(self.journal, run)
        step = entry.step.name.lower() if entry is not None else "unknown"
        log.info("run %s is in the journal from before (%s); the reconciliation decides what to do with it", run.id, step)
        self.queue.ask_for_sync()
        return False
