"""Use case: tell the server how a run ended, with its result encrypted for whoever asked."""
from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator

from attrs import frozen

from v6node.app.active_runs import ActiveRuns
from v6node.app.audit_trail import AuditTrail
from v6node.app.cache import FACT_TTL, TimedCache
from v6node.app.emitter import Emitter
from v6node.app.retry import until_done
from v6node.app.run_events import RunEvents
from v6node.app.session import NodeSession
from v6node.app.streams import through_thread
from v6node.domain.config import NodeConfig
from v6node.domain.errors import NodeError, RunAlreadyFinished
from v6node.domain.journal import RunStep
from v6node.domain.model import Run, RunUpdate, StreamedResult
from v6node.domain.run_events import Stage
from v6node.domain.status import RunStatus
from v6node.ports.clock import Clock
from v6node.ports.run_journal import RunJournal
from v6node.ports.server_api import ServerApi
from v6node.ports.task_workspace import TaskWorkspace

log = logging.getLogger("v6node.run")

# A log record with this attribute is a run's algorithm output (the value is the run id).
RUN_OUTPUT_MARK = "v6node_output_of_run"


@frozen
class RunOutcome:
    """How a run ended: its status, its log, and the size of its checked output file."""

    status: RunStatus
    log: str
    # Bytes in the run's output file, checked and to be sent as the result; None: no result.
    output_size: int | None = None


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator with no items


class ReportResult:
    """Report a run's end with ``finished_at``.

    Business rules:
    - the result is the output file, encrypted for the task's initiating organization in an
      encrypted collaboration (its public key asked at most once a minute; a changed key is
      logged), base64 otherwise; it goes to the blob store when the server has one on;
    - the output is read, encrypted and sent in pieces, never held whole;
    - the report is retried while the server is away; a run the server finished meanwhile
      (killed) is not an error: its end is not stored and that is logged;
    - the journal records REPORTED with the status; ``algorithm_status_change`` announces it.
    """

    def __init__(
        self,
        config: NodeConfig,
        server: ServerApi,
        workspace: TaskWorkspace,
        journal: RunJournal,
        clock: Clock,
        session: NodeSession,
        active: ActiveRuns,
        emitter: Emitter,
        events: RunEvents,
        audit: AuditTrail,
    ) -> None:
        self.config = config
        self.server = server
        self.workspace = workspace
        self.journal = journal
        self.clock = clock
        self.session = session
        self.active = active
        self.emitter = emitter
        self.events = events
        self.audit = audit
        self._public_keys: TimedCache[int, str] = TimedCache(clock, FACT_TTL, "the public key")
        self._blob_store: TimedCache[str, bool] = TimedCache(clock, FACT_TTL, "blob store availability")

    async def __call__(self, run: Run, outcome: RunOutcome) -> None:
        result_sha256 = await self._digest(run, outcome.output_size)
        result = await self._result_for(run, outcome.output_size)
        update = RunUpdate.finished(outcome.status, self.clock.now(), outcome.log, result)
        on_server = outcome.status
        try:
            await until_done(lambda: self.server.update_run(run.id, update), self.clock, log, f"reporting run {run.id}")
        except RunAlreadyFinished:
            log.info("run %s was already finished on the server (killed?); %s not stored", run.id, outcome.status)
            on_server = await self._status_on_server(run, outcome.status)
        # Its end is on the server from here on: a stop now must not report it again (as failed).
        self.active.reported(run.id)
        await self.journal.advance(run.id, RunStep.REPORTED, status=outcome.status)
        # For the run's own log file (the node's other logs leave it out): see RunLogFiles.
        log.info("%s", outcome.log, extra={RUN_OUTPUT_MARK: run.id})
        log.info("run %s reported: %s", run.id, outcome.status)
        self.events.publish(Stage.FINISHED, run, outcome.status)
        await self.audit.finished(run, on_server, result_sha256, reported=outcome.status)
        await self.emitter.status_changed(run, outcome.status)

    async def _status_on_server(self, run: Run, fallback: RunStatus) -> RunStatus:
        """The end the server holds for a run it would not update (for the audit log)."""
        try:
            return (await self.server.get_run(run.id)).status
        except NodeError as exc:
            log.warning("run %s: could not read the status the server holds: %s", run.id, exc)
            return fallback

    async def _digest(self, run: Run, size: int | None) -> str | None:
        """SHA-256 of the output file (for the audit log), read in pieces off the event loop."""
        if not size:
            return None
        digest = hashlib.sha256()
        async for chunk in self.workspace.output_chunks(run.id, self.config.max_output_size):
            await asyncio.to_thread(digest.update, chunk)
        return digest.hexdigest()

    async def _result_for(self, run: Run, size: int | None) -> str | StreamedResult:
        """The ``result`` field: ciphertext (or base64) for the initiating organization, or a blob id."""
        size = size or 0
        cryptor = self.session.crypto()
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
