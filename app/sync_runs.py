"""Use case: reconcile the server's open runs with the journal and the containers, then act."""
from __future__ import annotations

import contextlib
import logging
from datetime import timedelta

from v6node.app.active_runs import ActiveRuns
from v6node.app.queue_new_runs import claim, is_ours
from v6node.app.run_queue import RunQueue
from v6node.app.session import NodeSession
from v6node.domain.config import NodeConfig
from v6node.domain.containers import LABEL_TYPE, managed_labels
from v6node.domain.errors import NodeError
from v6node.domain.journal import RunStep
from v6node.domain.reconcile import ActionKind, Reconciliation, reconcile
from v6node.ports.clock import Clock
from v6node.ports.container_runtime import ContainerRuntime
from v6node.ports.run_journal import RunJournal
from v6node.ports.server_api import ServerApi
from v6node.ports.task_workspace import TaskWorkspace

log = logging.getLogger("v6node.node")

# Journal entries of finished runs are kept this long (they show how often a run started).
JOURNAL_KEEPS = timedelta(days=7)


class SyncRuns:
    """One sync; returns how many runs it queued.

    Business rules (the decisions themselves are the pure ``reconcile``):
    - new runs are queued; a run whose container still runs is waited for again; a run
      that ended unreported is reported; a run the node lost is ended ``failed``, never
      re-run; containers, task folders and journal entries of no open run are removed;
    - a run this process holds that the server lists closed was killed while the
      websocket was down (the kill order never came): it is stopped as a kill would;
    - every decision and every run passed over is logged.
    """

    def __init__(
        self,
        config: NodeConfig,
        server: ServerApi,
        runtime: ContainerRuntime,
        workspace: TaskWorkspace,
        journal: RunJournal,
        clock: Clock,
        session: NodeSession,
        queue: RunQueue,
        active: ActiveRuns,
    ) -> None:
        self.config = config
        self.server = server
        self.runtime = runtime
        self.workspace = workspace
        self.journal = journal
        self.clock = clock
        self.session = session
        self.queue = queue
        self.active = active

    async def __call__(self) -> int:
        async with self.queue.lock:
            here_before = self.queue.held()
            me = self.session.me()
            runs = [run for run in await self.server.list_open_runs() if is_ours(me, run)]
            await self._stop_runs_finished_on_the_server(here_before - {run.id for run in runs})
            containers = await self.runtime.list_containers({**managed_labels(self.config.name), LABEL_TYPE: "algorithm"})
            settings = self.session.settings
            keep_since = self.clock.now() - JOURNAL_KEEPS
            plan = reconcile(
                runs,
                # Not the whole history: the open runs' entries and those due to be forgotten.
                await self.journal.entries_for_sync([run.id for run in runs], keep_since),
                containers,
                await self.workspace.runs_with_output(),
                task_folders=await self.workspace.run_ids(),
                in_process=self.queue.held(),
                keep_entries_since=keep_since,
                identity=settings.identity if settings is not None else None,
            )
            return await self._apply(plan)

    async def _stop_runs_finished_on_the_server(self, run_ids: set[int]) -> None:
        for run_id in sorted(run_ids):
            active = self.active.get(run_id)
            if not self.queue.holds(run_id) or (active is not None and (active.killed or active.reported)):
                continue
            self.active.mark_killed(run_id)
            if active is None or active.container_id is None:
                continue  # queued or starting: it never starts now
            log.warning("run %s is finished on the server (killed while the websocket was down?); stopping it", run_id)
            with contextlib.suppress(NodeError):
                await self.runtime.kill(active.container_id)

    async def _apply(self, plan: Reconciliation) -> int:
        for note in plan.notes:
            log.info("reconcile: %s", note)
        for run_id in plan.entries_to_forget:
            await self.journal.forget(run_id)
        for container_id in plan.containers_to_remove:
            await self.runtime.remove(container_id)
        for run_id in plan.folders_to_remove:
            await self.workspace.remove(run_id)
        for action in plan.actions:
            run = action.run
            if action.needs_claim:
                await claim(self.journal, run)
            if action.needs_start_recorded:
                await self.journal.advance(run.id, RunStep.STARTED, container_id=action.container_id)
            if action.kind is not ActionKind.START:
                log.warning("%s", action.reason)
            self.queue.put(run, action)
        if plan.actions:
            log.info("queued %d run(s)", len(plan.actions))
        return len(plan.actions)
