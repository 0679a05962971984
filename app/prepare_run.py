"""Use case: everything before a run's container starts: input, policy, databases, token, image, folder."""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable

from attrs import frozen

from v6node.app.audit_trail import AuditTrail, sha256
from v6node.app.policy import CheckPolicy
from v6node.app.retry import until_done
from v6node.app.session import NodeSession
from v6node.domain.config import NodeConfig
from v6node.domain.containers import (
    DATABASE_COPIES,
    RUN_CONTEXT_FILE,
    ContainerSpec,
    build_container_spec,
    database_copies,
    managed_labels,
    missing_databases,
    run_context,
    tmp_volume_name,
)
from v6node.domain.errors import CryptoError, ImageNotFound, InvalidRunEnvironment, ServerRejected
from v6node.domain.model import Run
from v6node.domain.status import RunStatus
from v6node.ports.clock import Clock
from v6node.ports.container_runtime import ContainerRuntime
from v6node.ports.server_api import ServerApi
from v6node.ports.task_workspace import TaskWorkspace

log = logging.getLogger("v6node.run")


class RunEnded(Exception):
    """A step decided how the run ends before (or instead of) a normal result."""

    def __init__(self, status: RunStatus, log_text: str) -> None:
        super().__init__(log_text)
        self.status = status
        self.log_text = log_text


@frozen
class PreparedRun:
    """A run ready to start: its container and its container token."""

    spec: ContainerSpec
    token: str


async def _first_failure_wins(*steps: Awaitable[object]) -> list[object]:
    """Run ``steps`` concurrently; all finish, then the first failure (in argument order) is raised."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


class PrepareRun:
    """Prepare one run's container, or end the run (``RunEnded``) with the precise status.

    Business rules:
    - input that cannot be decoded/decrypted, is not JSON or is larger than
      ``max_input_size`` ends the run ``failed``; it never reaches the algorithm;
    - the policy comes first (a denied task learns nothing about this node's databases):
      a denial ends it ``not allowed`` with the rule in the log;
    - a database the node lacks, a bad environment variable or no container token ends it
      ``failed``; an image neither pullable nor local ends it ``non-existing Docker image``;
    - the container token, the image and the job's temporary volume are fetched at once,
      each retried while the server or the engine is away.
    """

    def __init__(
        self,
        config: NodeConfig,
        server: ServerApi,
        runtime: ContainerRuntime,
        workspace: TaskWorkspace,
        clock: Clock,
        session: NodeSession,
        check_policy: CheckPolicy,
        audit: AuditTrail,
    ) -> None:
        self.config = config
        self.server = server
        self.runtime = runtime
        self.workspace = workspace
        self.clock = clock
        self.session = session
        self.check_policy = check_policy
        self.audit = audit

    async def __call__(self, run: Run) -> PreparedRun:
        settings = self.session.algorithm_settings()
        input_data = await self._decode_input(run)
        input_sha256 = sha256(input_data)
        decision = await self.check_policy(run.task)
        if not decision.allowed:
            await self.audit.decided(run, decision, input_sha256, None)
            log.warning("run %s not allowed: %s", run.id, decision.reason)
            raise RunEnded(RunStatus.NOT_ALLOWED, f"This node does not allow this algorithm to run: {decision.reason}")
        self._check_databases(run)
        try:
            spec = build_container_spec(run, settings)
            context = run_context(run, settings, input_data) if settings.run_context_file else None
        except InvalidRunEnvironment as exc:
            raise RunEnded(RunStatus.FAILED, str(exc)) from exc
        # None of these depends on another; waiting for them one by one would add up their round trips.
        token, _, _ = await _first_failure_wins(
            self._container_token(run), self._ensure_image(run), self._ensure_tmp_volume(run)
        )
        assert isinstance(token, str)
        await self.audit.decided(run, decision, input_sha256, await self.runtime.local_image_id(run.task.image))
        await self.workspace.prepare(run.id, input_data, token)
        for source, name in database_copies(settings.databases):
            await self.workspace.copy_in(run.id, source, f"{DATABASE_COPIES}/{name}")
        if context is not None:
            await self.workspace.add_file(run.id, RUN_CONTEXT_FILE, (json.dumps(context, indent=2) + "\n").encode())
        return PreparedRun(spec, token)

    async def _decode_input(self, run: Run) -> bytes:
        cryptor = self.session.crypto()
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
                data = cryptor.decrypt_bytes(b"".join(chunks))
            else:
                if len(run.input) > encoded_limit:
                    raise too_large
                data = cryptor.decrypt_str(run.input)
        except CryptoError as exc:
            what = "decrypted for this organization" if cryptor.encrypted else "decoded"
            raise RunEnded(RunStatus.FAILED, f"the run's input could not be {what}: {exc}") from exc
        if len(data) > limit:
            raise too_large
        try:
            json.loads(data)
        except ValueError as exc:
            # AES-CTR has no integrity check: input for another key can decrypt to noise.
            hint = "; it was probably encrypted for another organization's key" if cryptor.encrypted else ""
            raise RunEnded(
                RunStatus.FAILED,
                f"the run's input is not JSON ({exc}){hint}; vantage6 algorithms expect "
                '{"method": ..., "args": [...], "kwargs": {...}}',
            ) from exc
        return data

    def _check_databases(self, run: Run) -> None:
        databases = self.session.algorithm_settings().databases
        missing = missing_databases(run, databases)
        if missing:
            configured = ", ".join(db.label for db in databases) or "none"
            raise RunEnded(
                RunStatus.FAILED,
                f"the task asks for database(s) {', '.join(missing)}, which this node does not have "
                f"(configured: {configured})",
            )

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

    async def _ensure_tmp_volume(self, run: Run) -> None:
        name = tmp_volume_name(self.config.name, run.task.job_id, run.id)
        # Retried while the engine is away (restarting): the run starts once it is back.
        await until_done(
            lambda: self.runtime.ensure_volume(name, managed_labels(self.config.name)),
            self.clock, log, f"creating the temporary volume of run {run.id}",
        )
