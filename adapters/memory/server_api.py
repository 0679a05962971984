"""An in-memory vantage6 server with the real server's run PATCH semantics."""
from __future__ import annotations

import base64
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator
from datetime import datetime, timezone
from typing import Any

from attrs import evolve

from v6node.adapters.memory.server_state import MemoryServerState, StoredRun
from v6node.domain.errors import (
    AuthenticationFailed,
    RunAlreadyFinished,
    ServerRejected,
    ServerUnavailable,
)
from v6node.domain.kill import KillOrder, KillTarget
from v6node.domain.model import (
    Collaboration,
    NodeIdentity,
    Organization,
    RequestedDatabase,
    Run,
    RunUpdate,
    StreamedResult,
    TaskRef,
)
from v6node.domain.status import RunStatus
from v6node.ports.clock import Clock
from v6node.ports.server_api import ServerApi


_NO_BLOB_STORE = "The large result store is not set to blob storage, result streaming is not available."


class MemoryServerApi(ServerApi):
    """Holds organizations, collaborations, tasks, runs, algorithm stores and blobs; records every call.

    Test-side helpers: ``create_task``, ``kill_task``, ``runs``, ``calls``, ``fail_next``,
    ``add_organization``, ``algorithm_stores`` (id -> URL), ``blob_store`` (the server's
    large result store on or off), ``blobs`` (id -> bytes), ``blob_chunk_size``.
    Like the real server, a blob can be downloaded only once a run names it as its input
    or result, and tasks created while ``blob_store`` is on have blob runs.
    Nodes of one server share one ``MemoryServerState`` (``state``), each with its identity.
    """

    def __init__(
        self,
        identity: NodeIdentity | None = None,
        api_key: str = "api-key",
        encrypted: bool = False,
        token_lifetime: float = 6 * 3600,
        clock: Clock | None = None,
        blob_store: bool = False,
        state: MemoryServerState | None = None,
    ) -> None:
        self.identity = identity or NodeIdentity(
            node_id=10, node_name="memory-node", organization_id=1, organization_name="org-1", collaboration_id=1
        )
        self.api_key = api_key
        self.accepted_api_key = api_key
        self.token_lifetime = token_lifetime
        # Several nodes of one server share one state; each has its own identity and tokens.
        self.state = state or MemoryServerState()
        self.organizations = self.state.organizations
        self.organizations.setdefault(
            self.identity.organization_id, Organization(self.identity.organization_id, self.identity.organization_name)
        )
        self.collaborations = self.state.collaborations
        self.collaborations.setdefault(
            self.identity.collaboration_id, Collaboration(self.identity.collaboration_id, "collab", encrypted)
        )
        self.tasks = self.state.tasks
        self.runs = self.state.runs
        self.algorithm_stores = self.state.algorithm_stores
        self.blob_store = blob_store
        self.blobs = self.state.blobs
        self.blob_chunk_size = 1024 * 1024
        self.calls: Counter[str] = Counter()
        self._failures: dict[str, list[Exception]] = {}
        self._token = ""
        self._logins = 0
        self.clock = clock

    # --- test-side helpers ---------------------------------------------------------------
    def add_organization(self, org_id: int, name: str, public_key: str = "") -> Organization:
        self.organizations[org_id] = org = Organization(org_id, name, public_key)
        return org

    def fail_next(self, method: str, error: Exception, times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` raise ``error``."""
        self._failures.setdefault(method, []).extend([error] * times)

    def add_blob(self, data: bytes) -> str:
        """Store bytes as a user's upload would; returns the blob id."""
        blob_id = str(uuid.uuid4())
        self.blobs[blob_id] = data
        return blob_id

    def create_task(
        self,
        image: str,
        input: dict[str, Any] | str | None = None,
        organization_ids: tuple[int, ...] | None = None,
        *,
        parent_id: int | None = None,
        init_org_id: int | None = None,
        init_user_id: int | None = 99,
        databases: tuple[RequestedDatabase, ...] = (),
        store_id: int | None = None,
    ) -> TaskRef:
        """A task with one run per organization; dict inputs are stored as the user client does.

        With ``blob_store`` on, a dict input goes into a blob (base64 text of the JSON, as
        the client uploads it for unencrypted collaborations) and the runs carry its id;
        a str input is then taken as a blob id.
        """
        if input is None:
            input = {"method": "main", "args": [], "kwargs": {}}
        stored_input = (
            base64.b64encode(json.dumps(input).encode()).decode() if isinstance(input, dict) else input
        )
        if self.blob_store and isinstance(input, dict):
            stored_input = self.add_blob(stored_input.encode())
        task_id = self.state.new_id()
        task = TaskRef(
            id=task_id,
            image=image,
            collaboration_id=self.identity.collaboration_id,
            name=f"task-{task_id}",
            job_id=task_id if parent_id is None else self.tasks[parent_id].job_id,
            parent_id=parent_id,
            init_org_id=init_org_id or self.identity.organization_id,
            init_user_id=init_user_id,
            store_id=store_id,
            databases=databases,
        )
        self.tasks[task_id] = task
        for org_id in organization_ids or (self.identity.organization_id,):
            run_id = self.state.new_id()
            self.runs[run_id] = StoredRun(
                run_id, task_id, org_id, stored_input, blob_storage_used=self.blob_store, assigned_at=self._now()
            )
        return task

    def runs_of(self, task_id: int) -> list[StoredRun]:
        return self.state.runs_of(task_id)

    def our_run(self, task_id: int) -> StoredRun:
        return next(r for r in self.runs_of(task_id) if r.organization_id == self.identity.organization_id)

    def kill_task(self, task_id: int, at: datetime) -> KillOrder:
        """What the server does on ``POST /kill/task``: finish the open runs, return the event."""
        targets = []
        for run in self.runs.values():
            task = self.tasks[run.task_id]
            if (run.task_id == task_id or task.parent_id == task_id) and run.finished_at is None:
                run.status = RunStatus.KILLED
                run.finished_at = at
                targets.append(KillTarget(run.id, run.task_id, run.organization_id))
        return KillOrder(collaboration_id=self.identity.collaboration_id, targets=tuple(targets))

    def _now(self) -> datetime:
        """Token expiry and server-side timestamps follow the given clock (else real time)."""
        return self.clock.now() if self.clock is not None else datetime.now(timezone.utc)

    # --- the port ---------------------------------------------------------------------------
    def _call(self, method: str) -> None:
        self.calls[method] += 1
        queued = self._failures.get(method)
        if queued:
            raise queued.pop(0)

    def _require_login(self) -> None:
        if not self._token:
            raise ServerRejected(401, "Missing Authorization Header")

    async def authenticate(self) -> NodeIdentity:
        self._call("authenticate")
        if self.api_key != self.accepted_api_key:
            raise AuthenticationFailed("Api key is not recognized!")
        self._logins += 1
        self._token = f"access-{self._logins}"
        self._expires = self._now().timestamp() + self.token_lifetime
        return self.identity

    async def renew_token(self) -> bool:
        self._call("renew_token")
        self._require_login()
        self._logins += 1
        self._token = f"access-{self._logins}"
        self._expires = self._now().timestamp() + self.token_lifetime
        return False

    def access_token(self) -> str:
        return self._token

    def token_expires_at(self) -> float:
        return self._expires if self._token else 0.0

    async def get_collaboration(self, collaboration_id: int) -> Collaboration:
        self._call("get_collaboration")
        self._require_login()
        try:
            return self.collaborations[collaboration_id]
        except KeyError:
            raise ServerRejected(404, f"collaboration having id={collaboration_id} not found") from None

    async def get_organization(self, organization_id: int) -> Organization:
        self._call("get_organization")
        self._require_login()
        try:
            return self.organizations[organization_id]
        except KeyError:
            raise ServerRejected(404, f"Organization id={organization_id} not found!") from None

    async def get_task(self, task_id: int) -> TaskRef:
        self._call("get_task")
        self._require_login()
        try:
            task = self.tasks[task_id]
        except KeyError:
            raise ServerRejected(404, f"task id={task_id} is not found") from None
        return evolve(task, status=self.task_status(task_id))

    def task_status(self, task_id: int) -> str:
        """Derived from the task's runs, as the server derives it."""
        return self.state.task_status(task_id)

    def _as_run(self, stored: StoredRun) -> Run:
        return Run(
            id=stored.id,
            task=evolve(self.tasks[stored.task_id], status=self.task_status(stored.task_id)),
            input=stored.input,
            status=stored.status,
            organization_id=stored.organization_id,
            blob_storage_used=stored.blob_storage_used,
            started_at=stored.started_at,
            finished_at=stored.finished_at,
            assigned_at=stored.assigned_at,
        )

    async def get_run(self, run_id: int) -> Run:
        self._call("get_run")
        self._require_login()
        try:
            return self._as_run(self.runs[run_id])
        except KeyError:
            raise ServerRejected(404, f"Run id={run_id} not found!") from None

    async def list_open_runs(self, task_id: int | None = None) -> list[Run]:
        self._call("list_open_runs")
        self._require_login()
        if task_id is not None and task_id not in self.tasks:
            raise ServerRejected(400, f"Task id={task_id} does not exist!")
        mine = self.identity.organization_id
        return [
            self._as_run(run)
            for run in sorted(self.runs.values(), key=lambda r: r.id, reverse=True)
            if run.organization_id == mine
            and run.finished_at is None
            and (task_id is None or run.task_id == task_id)
        ]

    async def update_run(self, run_id: int, update: RunUpdate) -> None:
        self._call("update_run")
        self._require_login()
        run = self.runs.get(run_id)
        if run is None:
            raise ServerRejected(404, f"Run id={run_id} not found!")
        if run.organization_id != self.identity.organization_id:
            raise ServerRejected(401, "This is not your algorithm run to PATCH!")
        if run.finished_at is not None:
            raise RunAlreadyFinished(400, "Cannot update an already finished algorithm run!")
        result = await _text(update.result)  # the whole body arrives before anything is stored
        # Not a partial update: absent finished_at, result and log become NULL.
        run.started_at = update.started_at or run.started_at
        run.finished_at = update.finished_at
        run.result = result
        run.log = update.log
        run.status = update.status or run.status
        run.patches.append(update)
        if run.status.has_failed:
            self._fail_unstarted_siblings(run)

    def _fail_unstarted_siblings(self, failed: StoredRun) -> None:
        # The server fails fast: once one run failed, runs of the task that nobody
        # started yet are finished as failed, so they are never picked up.
        for sibling in self.runs_of(failed.task_id):
            if sibling is failed or sibling.started_at is not None or sibling.finished_at is not None:
                continue
            sibling.status = RunStatus.FAILED
            sibling.finished_at = self._now()
            sibling.log = sibling.log or (
                f"Marked as failed because sibling run id={failed.id} failed with status '{failed.status}'."
            )

    def _task_finished(self, task_id: int) -> bool:
        # The server derives a task's status from its runs' statuses (finished_at plays no part).
        statuses = [run.status for run in self.runs_of(task_id)]
        return any(status.has_failed for status in statuses) or all(s is RunStatus.COMPLETED for s in statuses)

    async def request_container_token(self, task_id: int, image: str) -> str:
        self._call("request_container_token")
        self._require_login()
        task = self.tasks.get(task_id)
        if task is None:
            raise ServerRejected(400, "Parent task does not exist!")
        if task.image != image:
            raise ServerRejected(401, "Image and task do no match")
        if self._task_finished(task_id):
            raise ServerRejected(400, "Task is already finished!")
        return f"container-token-{task_id}"

    async def set_organization_public_key(self, organization_id: int, public_key: str) -> None:
        self._call("set_organization_public_key")
        self._require_login()
        organization = self.organizations.get(organization_id)
        if organization is None:
            raise ServerRejected(404, f"Organization with id={organization_id} not found")
        if organization_id != self.identity.organization_id:
            raise ServerRejected(401, "You lack the permission to do that!")
        self.organizations[organization_id] = evolve(organization, public_key=public_key)

    async def find_organizations(self, name: str) -> list[Organization]:
        self._call("find_organizations")
        self._require_login()
        return [org for org in self.organizations.values() if org.name == name]

    async def get_algorithm_store_url(self, store_id: int) -> str:
        self._call("get_algorithm_store_url")
        self._require_login()
        try:
            return self.algorithm_stores[store_id]
        except KeyError:
            raise ServerRejected(404, f"Algorithm store id={store_id} not found") from None

    async def blob_store_enabled(self) -> bool:
        self._call("blob_store_enabled")
        self._require_login()
        return self.blob_store

    async def download_blob(self, blob_id: str) -> AsyncIterator[bytes]:
        self._call("download_blob")
        self._require_login()
        if not any(blob_id in (run.input, run.result) for run in self.runs.values()):
            raise ServerRejected(404, f"No run found with input or result id={blob_id}")
        if not self.blob_store:
            raise ServerRejected(501, _NO_BLOB_STORE)
        data = self.blobs.get(blob_id)
        if data is None:
            # The real server's storage fails to find it: HTTP 500 until the adapter gives up.
            raise ServerUnavailable(f"GET blobstream/{blob_id} -> HTTP 500: Error streaming result!")
        for start in range(0, len(data), self.blob_chunk_size):
            yield data[start : start + self.blob_chunk_size]

    async def upload_blob(self, chunks: AsyncIterable[bytes]) -> str:
        self._call("upload_blob")
        self._require_login()
        if not self.blob_store:
            raise ServerRejected(501, _NO_BLOB_STORE)
        return self.add_blob(b"".join([chunk async for chunk in chunks]))


async def _text(result: str | StreamedResult | None) -> str | None:
    """A streamed result as the server stores it; its announced length must be right."""
    if not isinstance(result, StreamedResult):
        return result
    data = b"".join([chunk async for chunk in result.chunks()])
    if len(data) != result.length:
        raise AssertionError(f"a streamed result announced {result.length} bytes and sent {len(data)}")
    return data.decode("ascii")
