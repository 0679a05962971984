"""Use case: when the node stops, end what ran and remove everything it made."""
from __future__ import annotations

import asyncio
import contextlib
import logging

from v6node.app.active_runs import ActiveRuns
from v6node.app.report_result import ReportResult, RunOutcome
from v6node.app.run_events import RunEvents
from v6node.app.tear_down_egress import TearDownEgress
from v6node.domain.config import NodeConfig
from v6node.domain.containers import LABEL_MANAGED_BY, managed_labels
from v6node.domain.errors import CleanupIncomplete, NodeError, ResourcesLeft
from v6node.domain.status import RunStatus
from v6node.ports.container_runtime import ContainerRuntime
from v6node.ports.event_stream import EventStream
from v6node.ports.monitoring_server import MonitoringServer
from v6node.ports.proxy_server import ProxyServer
from v6node.ports.task_workspace import TaskWorkspace

log = logging.getLogger("v6node.node")


class CleanUp:
    """Stop the node's side of everything; raises ``CleanupIncomplete`` naming what stays.

    Business rules:
    - runs whose algorithm was running are reported ``failed`` with a log that says why
      (never started again: they may have had effects), within ``report_timeout``; what
      cannot be reported in time is reported at the next start;
    - runs that had not started yet stay open and run after the restart;
    - linked containers are let go and the firewall exception is removed (``TearDownEgress``);
    - every container (sidecars too), network and volume labelled with the node's name and
      every task folder is removed; everything is tried, and a failure is reported with what
      stays.
    """

    def __init__(
        self,
        config: NodeConfig,
        events: EventStream,
        runtime: ContainerRuntime,
        workspace: TaskWorkspace,
        proxy: ProxyServer,
        active: ActiveRuns,
        report: ReportResult,
        report_timeout: float,
        run_events: RunEvents,
        monitoring: MonitoringServer,
        tear_down_egress: TearDownEgress,
    ) -> None:
        self.config = config
        self.events = events
        self.runtime = runtime
        self.workspace = workspace
        self.proxy = proxy
        self.active = active
        self.report = report
        self.report_timeout = report_timeout
        self.run_events = run_events
        self.monitoring = monitoring
        self.tear_down_egress = tear_down_egress

    async def __call__(self) -> None:
        try:
            async with asyncio.timeout(self.report_timeout):
                reported = await self._report_interrupted("the node was stopped")
            if reported:
                log.warning("reported %d run(s) as failed: the node stopped while they ran", reported)
        except TimeoutError:
            log.error("could not report the interrupted runs in time; they are reported at the next start")
        with contextlib.suppress(NodeError):
            await self.events.close()
        left: list[str] = await self.tear_down_egress()
        try:
            removed = await self.runtime.remove_labelled(managed_labels(self.config.name))
            log.info("cleanup: removed %d container(s), network(s) and volume(s)", removed)
        except ResourcesLeft as exc:
            left.extend(exc.left)
        except NodeError as exc:
            left.append(f"every container, network and volume labelled {LABEL_MANAGED_BY}={self.config.name} ({exc})")
        for run_id in await self.workspace.run_ids():
            try:
                await self.workspace.remove(run_id)
            except OSError as exc:
                left.append(f"the task folder of run {run_id} ({exc.strerror or exc})")
        left.extend(f"the task folder of run {run_id}" for run_id in await self.workspace.run_ids())
        await self.proxy.stop()
        await self.monitoring.stop()
        self.run_events.close()
        if left:
            raise CleanupIncomplete(
                "the node stopped, but could not remove: " + "; ".join(dict.fromkeys(left))
                + ". The next start removes these leftovers; or remove them by hand."
            )

    async def _report_interrupted(self, reason: str) -> int:
        reported = 0
        for active in self.active.take_interrupted():
            log_text = (
                f"[v6node] {reason} while this run's algorithm was running. It is not started again "
                "automatically, because it may already have had effects; create the task again."
            )
            try:
                if active.container_id is not None:
                    await self.runtime.remove(active.container_id)
                status = RunStatus.KILLED if active.killed else RunStatus.FAILED
                await self.report(active.run, RunOutcome(status, log_text))
                await self.workspace.remove(active.run.id)
                reported += 1
            except NodeError as exc:
                log.error("could not report interrupted run %s (it is reported at the next start): %s", active.run.id, exc)
        return reported
