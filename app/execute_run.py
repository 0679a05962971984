"""Use case: execute one of this node's runs, from the start PATCH to the reported result."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from attrs import frozen

from v6node.app.active_runs import ActiveRun, ActiveRuns
from v6node.app.cache import TimedCache
from v6node.app.policy import CheckPolicy
from v6node.app.retry import until_done
from v6node.app.streams import through_thread
from v6node.domain.config import NodeConfig
from v6node.domain.containers import (
    DATABASE_COPIES,
    LABEL_IDENTITY,
    LABEL_MANAGED_BY,
    LABEL_RUN,
    LABEL_RUN_ASSIGNED,
    LABEL_TASK,
    RUN_CONTEXT_FILE,
    AlgorithmSettings,
    build_container_spec,
    database_copies,
    managed_labels,
    missing_databases,
    run_context,
    tmp_volume_name,
)
from v6node.domain.containers import ContainerExit, ContainerSpec
from v6node.domain.errors import (
    ContainerNotFound,
    ContainerStartFailed,
    CryptoError,
    ImageNotFound,
    InvalidRunEnvironment,
    NodeError,
    OutputRejected,
    RunAlreadyFinished,
    RuntimeUnavailable,
    ServerRejected,
)
from v6node.domain.journal import RunStep
from v6node.domain.model import NodeIdentity, Run, RunUpdate, StatusChange, StreamedResult
from v6node.domain.reconcile import RunAction
from v6node.domain.status import RunStatus
from v6node.ports.clock import Clock
from v6node.ports.container_runtime import ContainerRuntime
from v6node.ports.cryptor import Cryptor
from v6node.ports.proxy_server import ProxyServer
from v6node.ports.run_journal import RunJournal
from v6node.ports.server_api import ServerApi
from v6node.ports.task_workspace import TaskWorkspace

log = logging.getLogger("v6node.run")

LOGS_NOT_SHARED = "Node does not allow sharing algorithm logs"
# Public keys and the blob store setting are asked again at most this often (seconds).
FACT_TTL = 60.0

StatusListener = Callable[[StatusChange], Awaitable[None]]


class RunEnded(Exception):
    """A step decided how the run ends before (or instead of) a normal result."""

    def __init__(self, status: RunStatus, log_text: str) -> None:
        super().__init__(log_text)
        self.status = status
        self.log_text = log_text


# Exit codes of a container whose main process a signal ended (128 + the signal's number).
_SIGNALS = {137: "SIGKILL", 143: "SIGTERM"}


def _joined(*parts: str) -> str:
    return "\n".join(part.rstrip("\n") for part in parts if part)


def _own_labels(labels: dict[str, str]) -> dict[str, str]:
    """The labels that single out a run's own container (not one of a run of the same id elsewhere)."""
    keys = (LABEL_MANAGED_BY, LABEL_RUN, LABEL_TASK, LABEL_IDENTITY, LABEL_RUN_ASSIGNED)
    return {key: labels[key] for key in keys if key in labels}


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator with no items


class _FinishedOnServer(Exception):
    """The server refused the start PATCH: the run was finished (killed) before it began."""


async def _first_failure_wins(*steps: Awaitable[object]) -> list[object]:
    """Run ``steps`` concurrently; all finish, then the first failure (in argument order) is raised."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


@frozen
class RunOutcome:
    status: RunStatus
    log: str
    # Bytes in the run's output file, checked and to be sent as the result; None: no result.
    output_size: int | None = None


class ExecuteRun:
    """Run one run exactly once and report how it ended.

    Business rules:
    - ``started_at`` is set first; a run the server already finished (killed) is dropped.
    - Input that cannot be decoded/decrypted ends the run ``failed``; it never reaches
      the algorithm.
    - A policy denial ends it ``not allowed`` with ``finished_at`` and the rule in the log.
    - No container token -> ``failed``; no image -> ``non-existing Docker image``;
      an engine that cannot start it -> ``start failed``; a bad env var -> ``failed``.
    - Exit code 0 -> ``completed`` with the output file as the result, otherwise
      ``crashed``; the log is the container's output unless logs may not be shared.
    - A killed run is reported ``killed by user`` (with ``finished_at``), never as crashed.
    - Every ending is reported with ``finished_at``, retried while the server is away,
      and announced with ``algorithm_status_change``.
    """

    def __init__(
        self,
        *,
        config: NodeConfig,
        identity: NodeIdentity,
        settings: AlgorithmSettings,
        cryptor: Cryptor,
        server: ServerApi,
        runtime: ContainerRuntime,
        workspace: TaskWorkspace,
        journal: RunJournal,
        clock: Clock,
        active: ActiveRuns,
        proxy: ProxyServer,
        on_status: StatusListener,
    ) -> None:
        self.config = config
        self.identity = identity
        self.settings = settings
        self.cryptor = cryptor
        self.server = server
        self.runtime = runtime
        self.workspace = workspace
        self.journal = journal
        self.clock = clock
        self.active = active
        self.proxy = proxy
        self.on_status = on_status
        self._public_keys: TimedCache[int, str] = TimedCache(clock, FACT_TTL, "the public key")
        self._blob_store: TimedCache[str, bool] = TimedCache(clock, FACT_TTL, "blob store availability")
        self._interrupted: list[ActiveRun] = []
        self._policy = CheckPolicy(config.policies, server, runtime)

    async def __call__(self, run: Run) -> RunStatus | None:
        """Execute ``run``; returns the reported status, or None when the server had finished it."""
        async with self._running(run) as active:
            try:
                outcome = await self._execute(run)
            except RunEnded as end:
                outcome = RunOutcome(end.status, end.log_text)
            except _FinishedOnServer:
                log.info("run %s was finished on the server before it started (killed?)", run.id)
                await self.journal.advance(run.id, RunStep.REPORTED)
                active.reported = True
                await self._clean_up(run, active.container_id)
                return None
            return await self._finish(run, active, outcome)

    async def reattach(self, run: Run, container_id: str, token: str | None) -> RunStatus:
        """Wait again for a container started by an earlier process of this node, then finish as usual."""
        async with self._running(run) as active:
            active.container_id = container_id
            if token:
                active.token = token
                self.proxy.authorize(token)
            log.info("run %s: waiting again for its container %s", run.id, container_id[:12])
            outcome = await self._collect(run, container_id)
            return await self._finish(run, active, outcome)

    async def conclude(self, run: Run, action: RunAction) -> RunStatus:
        """Report the end of a run that reconciliation decided (nothing is started)."""
        async with self._running(run) as active:
            active.container_id = action.container_id
            log.info("%s", action.reason)
            if action.status is None and action.exit_code is not None:
                logs = await self._logs_if_any(action.container_id)
                await self.journal.advance(run.id, RunStep.EXITED, exit_code=action.exit_code)
                outcome = await self._outcome(run, ContainerExit(action.exit_code), _joined(logs, action.log), False)
            else:
                size, log_text = None, action.log
                if action.send_output:
                    try:
                        size = await self.workspace.output_size(run.id, self.config.max_output_size)
                    except FileNotFoundError:
                        pass
                    except OutputRejected as exc:
                        log_text = _joined(log_text, f"[v6node] {exc}")
                outcome = RunOutcome(action.status or RunStatus.UNKNOWN_ERROR, log_text, size)
            return await self._finish(run, active, outcome)

    async def report_interrupted(self, reason: str) -> int:
        """At shutdown: end the runs whose algorithm was running, so none stays open or runs twice."""
        reported = 0
        for active in list(self._interrupted):
            self._interrupted.remove(active)
            log_text = (
                f"[v6node] {reason} while this run's algorithm was running. It is not started again "
                "automatically, because it may already have had effects; create the task again."
            )
            try:
                if active.container_id is not None:
                    await self.runtime.remove(active.container_id)
                await self._report(active.run, RunOutcome(RunStatus.FAILED, log_text))
                await self.workspace.remove(active.run.id)
                reported += 1
            except NodeError as exc:
                log.error("could not report interrupted run %s (it is reported at the next start): %s", active.run.id, exc)
        return reported

    @contextlib.asynccontextmanager
    async def _running(self, run: Run) -> AsyncIterator[ActiveRun]:
        active = self.active.add(run)
        try:
            yield active
        except asyncio.CancelledError:
            if active.container_id is not None and not active.reported:
                # Stopped mid-run (shutdown): the node reports these runs before it exits.
                self._interrupted.append(active)
            raise
        finally:
            if active.token is not None:
                self.proxy.revoke(active.token)
            self.active.discard(run.id)

    async def _finish(self, run: Run, active: ActiveRun, outcome: RunOutcome) -> RunStatus:
        if active.killed:
            outcome = RunOutcome(RunStatus.KILLED, outcome.log or "killed by user")
        await self._report(run, outcome, active)
        await self._clean_up(run, active.container_id)
        return outcome.status

    async def _logs_if_any(self, container_id: str | None) -> str:
        if container_id is None:
            return ""
        try:
            return await self.runtime.logs(container_id, self.settings.limits.log_size)
        except ContainerNotFound:
            return ""

    async def _clean_up(self, run: Run, container_id: str | None) -> None:
        """Once reported, neither the container nor the task folder is needed."""
        try:
            if container_id is not None:
                await self.runtime.remove(container_id)
            if not self.config.keep_task_folders:
                await self.workspace.remove(run.id)
        except (NodeError, OSError) as exc:
            log.warning("could not clean up after run %s: %s", run.id, exc)

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
            if not announce.cancelled():
                await announce

    async def _collect(self, run: Run, container_id: str) -> RunOutcome:
        """Wait for the container to end and turn its exit into the run's outcome.

        When the Docker engine goes away meanwhile (stopped or restarted), wait until it
        answers again and ask once more: a container that lived through it (live-restore)
        is waited for further, and the end of one the engine stopped is reported as such.
        """
        engine_lost = False
        while True:
            try:
                exit_, timed_out = await self._wait(run, container_id)
                logs = await self.runtime.logs(container_id, self.settings.limits.log_size)
                break
            except RuntimeUnavailable as exc:
                engine_lost = True
                log.warning("run %s: the Docker engine went away while the algorithm ran (%s); waiting for it", run.id, exc)
                await until_done(self.runtime.ping, self.clock, log, f"reaching the Docker engine for run {run.id}")
        await self.journal.advance(run.id, RunStep.EXITED, exit_code=exit_.exit_code)
        log.info("run %s exited with code %s", run.id, exit_.exit_code)
        return await self._outcome(run, exit_, logs, timed_out, engine_lost)

    async def _outcome(
        self, run: Run, exit_: ContainerExit, logs: str, timed_out: bool, engine_lost: bool = False
    ) -> RunOutcome:
        """Exit code, limits and output file -> how the run ended."""
        if not self.config.share_algorithm_logs:
            logs = LOGS_NOT_SHARED
        limits = self.settings.limits
        if timed_out:
            return RunOutcome(
                RunStatus.FAILED,
                logs + f"\n[v6node] the algorithm was stopped after {limits.seconds:g} s (algorithm_time_limit)",
            )
        if exit_.oom_killed:
            limit = f" of {limits.memory} bytes (algorithm_memory)" if limits.memory else ""
            return RunOutcome(
                RunStatus.FAILED, logs + f"\n[v6node] the algorithm was killed: it ran out of memory{limit}"
            )
        if exit_.exit_code != 0:
            return RunOutcome(RunStatus.CRASHED, _joined(logs, self._why_it_stopped(run, exit_.exit_code, engine_lost)))
        try:
            size = await self.workspace.output_size(run.id, self.config.max_output_size)
        except FileNotFoundError:
            return RunOutcome(RunStatus.FAILED, logs + "\n[v6node] the algorithm exited 0 but wrote no output file")
        except OutputRejected as exc:
            log.warning("run %s: %s", run.id, exc)
            return RunOutcome(RunStatus.FAILED, logs + f"\n[v6node] {exc}")
        return RunOutcome(RunStatus.COMPLETED, logs, size)

    def _why_it_stopped(self, run: Run, exit_code: int, engine_lost: bool) -> str:
        """A log line for an algorithm stopped from outside the node (the node kills with SIGKILL
        only when asked to, and says so elsewhere); empty when it ended on its own."""
        active = self.active.get(run.id)
        if active is not None and active.killed:
            return ""
        signal = _SIGNALS.get(exit_code)
        if engine_lost:
            how = f" ({signal})" if signal else ""
            return (
                "[v6node] the Docker engine could not be reached while the algorithm ran (it was stopped or "
                f"restarted); when it answered again the container had ended with exit code {exit_code}{how}. "
                "An engine that shuts down stops the containers it runs."
            )
        if signal:
            return (
                f"[v6node] the algorithm was ended by {signal} (exit code {exit_code}) from outside the node: "
                "`docker stop` or `docker kill`, or the Docker engine shutting down or restarting"
            )
        return ""

    async def _wait(self, run: Run, container_id: str) -> tuple[ContainerExit, bool]:
        """The container's exit, and whether it was stopped for running past the time limit.

        The limit counts from the run's first start as the journal recorded it, so neither an
        engine outage nor a restart of the node gives the algorithm more time.
        """
        seconds = self.settings.limits.seconds
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

    async def _start_container(self, run: Run) -> str:
        input_data = await self._decode_input(run)
        # The policy first: a denied task learns nothing about this node's databases.
        await self._check_policy(run)
        self._check_databases(run)
        try:
            spec = build_container_spec(run, self.settings)
            context = run_context(run, self.settings, input_data) if self.settings.run_context_file else None
        except InvalidRunEnvironment as exc:
            raise RunEnded(RunStatus.FAILED, str(exc)) from exc
        # The container token, the image and the tmp volume do not depend on each other;
        # waiting for them one by one would add up their round trips.
        token, _, _ = await _first_failure_wins(
            self._container_token(run), self._ensure_image(run), self._ensure_tmp_volume(run)
        )
        await self.workspace.prepare(run.id, input_data, token)
        for source, name in database_copies(self.settings.databases):
            await self.workspace.copy_in(run.id, source, f"{DATABASE_COPIES}/{name}")
        if context is not None:
            await self.workspace.add_file(run.id, RUN_CONTEXT_FILE, (json.dumps(context, indent=2) + "\n").encode())
        active = self.active.get(run.id)
        if active is not None:
            active.token = token
        # The proxy forwards only requests of runs that are executing here.
        self.proxy.authorize(token)
        if active is not None and active.killed:
            raise RunEnded(RunStatus.KILLED, "killed by user before the algorithm started")
        try:
            container_id = await self._run_container(run, spec)
        except ContainerStartFailed as exc:
            raise RunEnded(RunStatus.START_FAILED, f"the algorithm container could not be started: {exc}") from exc
        if active is not None:
            active.container_id = container_id
        await self.journal.advance(run.id, RunStep.STARTED, container_id=container_id, token=token)
        log.info("run %s (task %s) started: %s in container %s", run.id, run.task.id, run.task.image, container_id[:12])
        return container_id

    async def _run_container(self, run: Run, spec: ContainerSpec) -> str:
        """Start the container; while the engine is away, wait for it and try again.

        The engine may have started the container before it went away (the answer was
        lost): such a container is taken as the run's own, never started a second time.
        One that was created but not started is removed, so its name is free again.
        """
        while True:
            try:
                return await self.runtime.run(spec)
            except RuntimeUnavailable as exc:
                log.warning("run %s: the Docker engine went away while its container was started (%s); waiting for it", run.id, exc)
            await until_done(self.runtime.ping, self.clock, log, f"reaching the Docker engine to start run {run.id}")
            for found in await self.runtime.list(_own_labels(spec.labels)):
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

    async def _ensure_tmp_volume(self, run: Run) -> None:
        name = tmp_volume_name(self.settings.node_name, run.task.job_id, run.id)
        # Retried while the engine is away (restarting): the run starts once it is back.
        await until_done(
            lambda: self.runtime.ensure_volume(name, managed_labels(self.settings.node_name)),
            self.clock, log, f"creating the temporary volume of run {run.id}",
        )

    async def _decode_input(self, run: Run) -> bytes:
        limit = self.config.max_input_size
        # Base64 (and the header of the encrypted form) make the stored input up to 4/3 larger.
        encoded_limit = limit * 4 // 3 + 8192
        too_large = RunEnded(
            RunStatus.FAILED, f"the run's input is larger than this node takes ({limit} bytes, max_input_size)"
        )
        try:
            if run.blob_storage_used:
                blob_id = run.input.strip().strip('"')
                chunks, received = [], 0
                async for chunk in self.server.download_blob(blob_id):
                    received += len(chunk)
                    if received > encoded_limit:
                        raise too_large
                    chunks.append(chunk)
                data = self.cryptor.decrypt_bytes(b"".join(chunks))
            else:
                if len(run.input) > encoded_limit:
                    raise too_large
                data = self.cryptor.decrypt_str(run.input)
        except CryptoError as exc:
            what = "decrypted for this organization" if self.cryptor.encrypted else "decoded"
            raise RunEnded(RunStatus.FAILED, f"the run's input could not be {what}: {exc}") from exc
        if len(data) > limit:
            raise too_large
        try:
            json.loads(data)
        except ValueError as exc:
            # AES-CTR has no integrity check: input for another key can decrypt to noise.
            hint = "; it was probably encrypted for another organization's key" if self.cryptor.encrypted else ""
            raise RunEnded(
                RunStatus.FAILED,
                f"the run's input is not JSON ({exc}){hint}; vantage6 algorithms expect "
                '{"method": ..., "args": [...], "kwargs": {...}}',
            ) from exc
        return data

    def _check_databases(self, run: Run) -> None:
        missing = missing_databases(run, self.settings.databases)
        if missing:
            configured = ", ".join(db.label for db in self.settings.databases) or "none"
            raise RunEnded(
                RunStatus.FAILED,
                f"the task asks for database(s) {', '.join(missing)}, which this node does not have "
                f"(configured: {configured})",
            )

    async def _check_policy(self, run: Run) -> None:
        decision = await self._policy(run.task)
        if not decision.allowed:
            log.warning("run %s not allowed: %s", run.id, decision.reason)
            raise RunEnded(RunStatus.NOT_ALLOWED, f"This node does not allow this algorithm to run: {decision.reason}")

    async def _container_token(self, run: Run) -> str:
        try:
            return await until_done(
                lambda: self.server.request_container_token(run.task.id, run.task.image),
                self.clock, log, f"requesting a container token for run {run.id}",
            )
        except ServerRejected as exc:
            raise RunEnded(RunStatus.FAILED, f"Could not obtain algorithm container token: {exc.message}") from exc

    async def _ensure_image(self, run: Run) -> None:
        image = run.task.image
        try:
            how = await until_done(
                lambda: self.runtime.ensure_image(image, self.config.policies.require_algorithm_pull),
                self.clock, log, f"getting the image of run {run.id}",
            )
        except ImageNotFound as exc:
            raise RunEnded(RunStatus.NON_EXISTING_IMAGE, f"Docker image {image} not available: {exc}") from exc
        if how == "local":
            log.info("run %s uses the local copy of %s (pull failed; require_algorithm_pull is false)", run.id, image)

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
        await self.on_status(self._status_change(run, RunStatus.ACTIVE))

    async def _result_for(self, run: Run, size: int | None) -> str | StreamedResult:
        """The ``result`` field: ciphertext (or base64) for the initiating organization, or a blob id.

        The output file is read, encrypted and sent in pieces, never held whole.
        """
        size = size or 0
        cryptor = self.cryptor
        if not size and not cryptor.encrypted:
            return ""
        public_key = ""
        init_org = run.task.init_org_id
        if cryptor.encrypted and init_org is not None:
            public_key = await self._public_keys.get(init_org, lambda: self._fetch_public_key(init_org))
        use_blob = await self._blob_store.get("server", self._fetch_blob_store_enabled)

        def output() -> AsyncIterator[bytes]:
            if not size:
                return _nothing()
            return self.workspace.output_chunks(run.id, self.config.max_output_size)

        if not use_blob:
            return StreamedResult(
                length=cryptor.str_form_length(size, public_key),
                chunks=lambda: through_thread(lambda chunks: cryptor.encrypt_str_stream(chunks, public_key), output()),
            )
        return await until_done(
            lambda: self.server.upload_blob(
                through_thread(lambda chunks: cryptor.encrypt_stream(chunks, public_key), output())
            ),
            self.clock, log, f"uploading the result of run {run.id}",
        )

    async def _fetch_public_key(self, organization_id: int) -> str:
        org = await until_done(
            lambda: self.server.get_organization(organization_id),
            self.clock, log, f"reading the public key of organization {organization_id}",
        )
        if not org.public_key:
            raise NodeError(
                f"organization {organization_id} ('{org.name}') has no public key on the server, "
                "so the result cannot be encrypted for it"
            )
        return org.public_key

    async def _fetch_blob_store_enabled(self) -> bool:
        return await until_done(self.server.blob_store_enabled, self.clock, log, "asking whether the blob store is on")

    async def _report(self, run: Run, outcome: RunOutcome, active: ActiveRun | None = None) -> None:
        result = await self._result_for(run, outcome.output_size)
        update = RunUpdate.finished(outcome.status, self.clock.now(), outcome.log, result)
        try:
            await until_done(
                lambda: self.server.update_run(run.id, update), self.clock, log, f"reporting run {run.id}"
            )
        except RunAlreadyFinished:
            log.info("run %s was already finished on the server (killed?); %s not stored", run.id, outcome.status)
        await self.journal.advance(run.id, RunStep.REPORTED, status=outcome.status)
        if active is not None:
            active.reported = True
        log.info("run %s reported: %s", run.id, outcome.status)
        await self.on_status(self._status_change(run, outcome.status))

    def _status_change(self, run: Run, status: RunStatus) -> StatusChange:
        return StatusChange(
            node_id=self.identity.node_id,
            organization_id=self.identity.organization_id,
            collaboration_id=self.identity.collaboration_id,
            run_id=run.id,
            task_id=run.task.id,
            parent_id=run.task.parent_id,
            status=status,
        )
