"""Use case: execute one of this node's runs, from the start PATCH to the reported result."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from v6node.app.active_runs import ActiveRun, ActiveRuns
from v6node.app.audit_trail import AuditTrail
from v6node.app.emitter import Emitter
from v6node.app.prepare_run import PrepareRun, RunEnded
from v6node.app.report_result import ReportResult, RunOutcome
from v6node.app.retry import until_done
from v6node.app.run_events import RunEvents
from v6node.app.session import NodeSession
from v6node.app.stream_algorithm_logs import StreamAlgorithmLogs
from v6node.app.vpn_run_forwarding import VpnRunForwarding
from v6node.domain.config import NodeConfig
from v6node.domain.containers import (
    LABEL_IDENTITY,
    LABEL_MANAGED_BY,
    LABEL_RUN,
    LABEL_RUN_ASSIGNED,
    LABEL_TASK,
    ContainerExit,
    ContainerSpec,
)
from v6node.domain.errors import (
    ContainerNotFound,
    ContainerStartFailed,
    NodeError,
    OutputRejected,
    RunAlreadyFinished,
    RuntimeUnavailable,
)
from v6node.domain.journal import RunStep
from v6node.domain.model import Run, RunUpdate
from v6node.domain.outcome import LOGS_NOT_SHARED, joined, why_it_stopped
from v6node.domain.reconcile import ActionKind, RunAction
from v6node.domain.run_events import Stage
from v6node.domain.status import RunStatus
from v6node.ports.clock import Clock
from v6node.ports.container_runtime import ContainerRuntime
from v6node.ports.proxy_server import ProxyServer
from v6node.ports.run_journal import RunJournal
from v6node.ports.server_api import ServerApi
from v6node.ports.task_workspace import TaskWorkspace

log = logging.getLogger("v6node.run")

# How long the report waits, once the container stopped, for the last streamed log batch.
STREAM_DRAIN_SECONDS = 10.0

def _own_labels(labels: dict[str, str]) -> dict[str, str]:
    """The labels that single out a run's own container (not one of a run of the same id elsewhere)."""
    keys = (LABEL_MANAGED_BY, LABEL_RUN, LABEL_TASK, LABEL_IDENTITY, LABEL_RUN_ASSIGNED)
    return {key: labels[key] for key in keys if key in labels}


class _FinishedOnServer(Exception):
    """The server refused the start PATCH: the run was finished (killed) before it began."""


class ExecuteRun:
    """Run one run exactly once and report how it ended; ``action`` is what a reconciliation
    decided (None or START: a new run).

    Business rules:
    - ``started_at`` is set first, beside the container's start; a run the server already
      finished (killed) is dropped, its container stopped if it had started;
    - what ``PrepareRun`` refuses ends the run with its status; the engine refusing the
      container ends it ``start failed``; an engine outage during the start is waited out,
      and a container the engine had started meanwhile is taken, never started twice;
    - exit code 0 -> ``completed`` with the output file as the result (``failed`` when it is
      missing, too large, or not a plain file); otherwise ``crashed``, saying when a signal
      from outside the node ended it; past ``algorithm_time_limit`` (counted from the first
      start in the journal) or out of memory -> ``failed`` with the reason;
    - the log is the container's output (its newest ``max_log_size`` bytes) unless logs may
      not be shared; a killed run is reported ``killed by user``, never as crashed;
    - ``REATTACH`` waits again for a container an earlier process started; ``REPORT``,
      ``REREPORT`` and ``FAIL_LOST`` report what the reconciliation decided, starting nothing;
    - on the VPN, the algorithm gets its forwarded ports (``VpnRunForwarding``);
    - afterwards the container, its VPN forwarding and the task folder go (the folder
      stays with ``keep_task_folders``).
    """

    def __init__(
        self,
        config: NodeConfig,
        server: ServerApi,
        runtime: ContainerRuntime,
        workspace: TaskWorkspace,
        journal: RunJournal,
        clock: Clock,
        proxy: ProxyServer,
        session: NodeSession,
        active: ActiveRuns,
        emitter: Emitter,
        prepare: PrepareRun,
        report: ReportResult,
        events: RunEvents,
        stream_logs: StreamAlgorithmLogs,
        audit: AuditTrail,
        vpn: VpnRunForwarding,
    ) -> None:
        self.config = config
        self.server = server
        self.runtime = runtime
        self.workspace = workspace
        self.journal = journal
        self.clock = clock
        self.proxy = proxy
        self.session = session
        self.active = active
        self.emitter = emitter
        self.prepare = prepare
        self.report = report
        self.events = events
        self.stream_logs = stream_logs
        self.audit = audit
        self.vpn = vpn

    async def __call__(self, run: Run, action: RunAction | None = None) -> RunStatus | None:
        """Returns the status reported, or None when the server had finished the run before it began."""
        async with self._running(run) as active:
            if action is None or action.kind is ActionKind.START:
                try:
                    outcome = await self._execute(run)
                except RunEnded as end:
                    outcome = RunOutcome(end.status, end.log_text)
                except _FinishedOnServer:
                    log.info("run %s was finished on the server before it started (killed?)", run.id)
                    await self.journal.advance(run.id, RunStep.REPORTED)
                    self.active.reported(run.id)
                    await self._clean_up(run, active.container_id)
                    return None
            elif action.kind is ActionKind.REATTACH:
                assert action.container_id is not None
                outcome = await self._reattach(run, action)
            else:
                outcome = await self._conclude(run, action)
            if active.killed:
                outcome = RunOutcome(RunStatus.KILLED, outcome.log or "killed by user")
            await self.report(run, outcome)
            await self._clean_up(run, active.container_id)
            return outcome.status

    @contextlib.asynccontextmanager
    async def _running(self, run: Run) -> AsyncIterator[ActiveRun]:
        active = self.active.add(run)
        try:
            yield active
        except asyncio.CancelledError:
            # Stopped mid-run (shutdown): the node reports such runs before it exits.
            self.active.interrupt(run.id)
            raise
        finally:
            if active.token is not None:
                self.proxy.revoke(active.token)
            self.active.discard(run.id)

    # --- the three ways in ----------------------------------------------------------------
    async def _execute(self, run: Run) -> RunOutcome:
        # The start PATCH need not delay the container: it only has to be through before
        # any other status is sent (and when the server refuses it, the run is stopped).
        started = asyncio.create_task(self._mark_started(run))
        try:
            container_id = await self._start_container(run)
        except asyncio.CancelledError:
            started.cancel()
            raise
        except BaseException:
            await started  # a refused start PATCH (_FinishedOnServer) wins over the failure
            raise
        announce = asyncio.create_task(self._announce_active(run, started, container_id))
        try:
            return await self._collect(run, container_id)
        except asyncio.CancelledError:
            announce.cancel()
            raise
        finally:
            # It streams the log until the container stops, which it has now: the stream ends
            # by itself, and the report must not go out before its last batch.
            await asyncio.wait({announce}, timeout=STREAM_DRAIN_SECONDS)
            announce.cancel()
            if not announce.cancelled():
                await announce

    async def _reattach(self, run: Run, action: RunAction) -> RunOutcome:
        """Wait again for a container started by an earlier process of this node."""
        assert action.container_id is not None
        self.active.started(run.id, action.container_id)
        token = action.entry.token if action.entry is not None else None
        if token:
            self._authorize(run, token)
        log.info("run %s: waiting again for its container %s", run.id, action.container_id[:12])
        self.events.publish(Stage.STARTED, run, detail=f"{action.container_id} (re-attached)")
        return await self._collect(run, action.container_id)

    async def _conclude(self, run: Run, action: RunAction) -> RunOutcome:
        """The end the reconciliation decided (nothing is started)."""
        if action.container_id is not None:
            self.active.started(run.id, action.container_id)
        log.info("%s", action.reason)
        if action.status is None and action.exit_code is not None:
            logs = await self._logs_if_any(action.container_id)
            await self.journal.advance(run.id, RunStep.EXITED, exit_code=action.exit_code)
            return await self._outcome(run, ContainerExit(action.exit_code), joined(logs, action.log), False)
        size, log_text = None, action.log
        if action.send_output:
            try:
                size = await self.workspace.output_size(run.id, self.config.max_output_size)
            except FileNotFoundError:
                pass
            except OutputRejected as exc:
                log_text = joined(log_text, f"[v6node] {exc}")
        return RunOutcome(action.status or RunStatus.UNKNOWN_ERROR, log_text, size)

    # --- starting ------------------------------------------------------------------------------
    async def _start_container(self, run: Run) -> str:
        prepared = await self.prepare(run)
        # The proxy forwards only requests of runs that are executing here.
        self._authorize(run, prepared.token)
        if self.active.killed(run.id):
            raise RunEnded(RunStatus.KILLED, "killed by user before the algorithm started")
        spec = await self.vpn.attach(run, prepared.spec)
        try:
            container_id = await self._run_container(run, spec)
        except ContainerStartFailed as exc:
            raise RunEnded(RunStatus.START_FAILED, f"the algorithm container could not be started: {exc}") from exc
        self.active.started(run.id, container_id)
        await self.journal.advance(run.id, RunStep.STARTED, container_id=container_id, token=prepared.token)
        self.events.publish(Stage.STARTED, run, detail=container_id)
        await self.audit.started(run, container_id)
        log.info("run %s (task %s) started: %s in container %s", run.id, run.task.id, run.task.image, container_id[:12])
        return container_id

    def _authorize(self, run: Run, token: str) -> None:
        self.active.authorized(run.id, token)
        self.proxy.authorize(token)

    async def _run_container(self, run: Run, spec: ContainerSpec) -> str:
        """Start the container; while the engine is away, wait for it and try again, taking a
        container the engine had started (the answer was lost) and removing one it only created."""
        while True:
            try:
                return await self.runtime.run(spec)
            except RuntimeUnavailable as exc:
                log.warning("run %s: the Docker engine went away while its container was started (%s); waiting for it", run.id, exc)
            await until_done(self.runtime.ping, self.clock, log, f"reaching the Docker engine to start run {run.id}")
            for found in await self.runtime.list_containers(_own_labels(spec.labels)):
                if found.running or found.exit_code is not None:
                    log.info("run %s: the engine had started its container %s before it went away", run.id, found.id[:12])
                    return found.id
                await self.runtime.remove(found.id)

    async def _mark_started(self, run: Run) -> None:
        try:
            await until_done(
                lambda: self.server.update_run(run.id, RunUpdate.started(self.clock.now())),
                self.clock, log, f"marking run {run.id} started",
            )
        except RunAlreadyFinished:
            raise _FinishedOnServer from None

    async def _announce_active(self, run: Run, started: asyncio.Task[None], container_id: str) -> None:
        try:
            await started
        except _FinishedOnServer:
            # Finished on the server while the container was starting: stop the algorithm.
            with contextlib.suppress(NodeError):
                await self.runtime.kill(container_id)
            raise
        try:
            await until_done(
                lambda: self.server.update_run(run.id, RunUpdate.status_change(RunStatus.ACTIVE)),
                self.clock, log, f"marking run {run.id} active",
            )
        except RunAlreadyFinished:
            return
        except NodeError as exc:
            log.warning("could not mark run %s active: %s", run.id, exc)
        await self.emitter.status_changed(run, RunStatus.ACTIVE)
        await self.stream_logs(run, container_id)

    # --- ending ----------------------------------------------------------------------------------
    async def _collect(self, run: Run, container_id: str) -> RunOutcome:
        """Wait for the container to end and turn its exit into the run's outcome.

        When the Docker engine goes away meanwhile (stopped or restarted), wait until it
        answers again and ask once more: a container that lived through it (live-restore)
        is waited for further, and the end of one the engine stopped is reported as such.
        """
        engine_lost = False
        log_size = self.session.algorithm_settings().limits.log_size
        while True:
            try:
                exit_, timed_out = await self._wait(run, container_id)
                logs = await self.runtime.logs(container_id, log_size)
                break
            except RuntimeUnavailable as exc:
                engine_lost = True
                log.warning("run %s: the Docker engine went away while the algorithm ran (%s); waiting for it", run.id, exc)
                await until_done(self.runtime.ping, self.clock, log, f"reaching the Docker engine for run {run.id}")
        await self.journal.advance(run.id, RunStep.EXITED, exit_code=exit_.exit_code)
        log.info("run %s exited with code %s", run.id, exit_.exit_code)
        return await self._outcome(run, exit_, logs, timed_out, engine_lost)

    async def _wait(self, run: Run, container_id: str) -> tuple[ContainerExit, bool]:
        """The container's exit, and whether it was stopped for running past the time limit,
        which counts from the run's first start in the journal (outages and restarts included)."""
        seconds = self.session.algorithm_settings().limits.seconds
        if seconds is None:
            return await self.runtime.wait(container_id), False
        entry = await self.journal.get(run.id)
        since = entry.started_at if entry is not None and entry.started_at is not None else self.clock.now()
        left = seconds - (self.clock.now() - since).total_seconds()
        waiting = asyncio.create_task(self.runtime.wait(container_id))
        deadline = asyncio.create_task(self.clock.sleep(max(left, 0.0)))
        try:
            done, _ = await asyncio.wait({waiting, deadline}, return_when=asyncio.FIRST_COMPLETED)
            if waiting in done:
                return waiting.result(), False
            log.warning("container %s ran past algorithm_time_limit (%g s); stopping it", container_id[:12], seconds)
            await self.runtime.kill(container_id)
            return await waiting, True
        finally:
            waiting.cancel()
            deadline.cancel()

    async def _outcome(
        self, run: Run, exit_: ContainerExit, logs: str, timed_out: bool, engine_lost: bool = False
    ) -> RunOutcome:
        """Exit code, limits and output file -> how the run ended."""
        if not self.config.share_algorithm_logs:
            logs = LOGS_NOT_SHARED
        limits = self.session.algorithm_settings().limits
        if timed_out:
            return RunOutcome(
                RunStatus.FAILED,
                logs + f"\n[v6node] the algorithm was stopped after {limits.seconds:g} s (algorithm_time_limit)",
            )
        if exit_.lost is not None:
            return RunOutcome(RunStatus.FAILED, joined(logs, f"[v6node] {exit_.lost}"))
        if exit_.oom_killed:
            limit = f" of {limits.memory} bytes (algorithm_memory)" if limits.memory else ""
            return RunOutcome(RunStatus.FAILED, logs + f"\n[v6node] the algorithm was killed: it ran out of memory{limit}")
        if exit_.exit_code != 0:
            stopped = why_it_stopped(exit_.exit_code, self.active.killed(run.id), engine_lost)
            return RunOutcome(RunStatus.CRASHED, joined(logs, stopped))
        try:
            size = await self.workspace.output_size(run.id, self.config.max_output_size)
        except FileNotFoundError:
            return RunOutcome(RunStatus.FAILED, logs + "\n[v6node] the algorithm exited 0 but wrote no output file")
        except OutputRejected as exc:
            log.warning("run %s: %s", run.id, exc)
            return RunOutcome(RunStatus.FAILED, logs + f"\n[v6node] {exc}")
        return RunOutcome(RunStatus.COMPLETED, logs, size)

    async def _logs_if_any(self, container_id: str | None) -> str:
        if container_id is None:
            return ""
        try:
            return await self.runtime.logs(container_id, self.session.algorithm_settings().limits.log_size)
        except ContainerNotFound:
            return ""

    async def _clean_up(self, run: Run, container_id: str | None) -> None:
        """Once reported, neither the container nor the task folder is needed (nor its VPN forwarding)."""
        try:
            if container_id is not None:
                await self.runtime.remove(container_id)
            await self.vpn.detach(run.id)
            if not self.config.keep_task_folders:
                await self.workspace.remove(run.id)
        except (NodeError, OSError) as exc:
            log.warning("could not clean up after run %s: %s", run.id, exc)
